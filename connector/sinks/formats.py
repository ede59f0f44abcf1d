"""File formats for the daily snapshot: CSV and JSON Lines, streamed, and a streaming gzip.

A format turns an entity's records into bytes; storage (S3, SFTP) and keys are separate
(``keys.py``). Unlike STYLE.md's ``serialize(rows) -> bytes``, a writer yields chunks: an
entity can hold millions of records, and the file must stream to a multipart upload with flat
memory. ``docs/file-format.md`` is the reader's side of these rules, for CareCloud's ingest team.

Value encodings, the same in both formats: dates ``YYYY-MM-DD``; timestamps UTC
``YYYY-MM-DDTHH:MM:SS.mmmZ`` (milliseconds, truncated like the Avro encoding); decimals as exact
strings at the schema's scale (``-12.50``), never floats; booleans ``true``/``false``; enum symbols
as written. CSV only: null is an empty cell, and string fields a spreadsheet would run as a
formula are neutralised (see ``neutralise``). Numbers, dates and enums are never altered, so a
negative amount stays ``-12.50``.

Records are checked against the schema's types as they are written: a wrong type, a decimal
with more places than the scale, a naive timestamp or a null in a required field raises
``EncodeError`` naming the entity, field and row number, never the value.
"""

from __future__ import annotations

import collections
import csv
import io
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

import orjson

from connector.sinks._cells import FORMULA_TRIGGERS, Encoder, RuleError, Value, encoders
from connector.sinks._stored import stored_encoders
from connector.sinks.exceptions import EncodeError, SinkConfigError

__all__ = [
    "CHUNK_BYTES",
    "CSV",
    "DEFAULT_GZIP_LEVEL",
    "FORMATS",
    "GZIP_CONTENT_TYPE",
    "JSON_LINES",
    "CsvFormat",
    "Format",
    "JsonLinesFormat",
    "RowWriter",
    "gzip_chunks",
    "neutralise",
]

DEFAULT_GZIP_LEVEL = 6
"""Chosen by measurement: docs/decisions/0007-snapshot-schedule-and-routing.md."""
GZIP_CONTENT_TYPE = "application/gzip"
"""The stored object's type; no ``Content-Encoding``, so clients do not decompress on download."""
_ENCODE_ROWS = 1000
"""Rows encoded per call of the CSV or JSON encoder."""
CHUNK_BYTES = 4 * 1024 * 1024
"""Writers yield about this much at a time: zlib releases the GIL per call, and in calls of a few
MiB a compressing thread keeps pace with the formatting one; at 256 KiB it waits for the GIL
(docs/decisions/0007). Memory stays flat at a few chunks whatever the entity's size."""


class RowWriter(Protocol):
    """Writes one entity's whole file."""

    def write_rows(self, records: Iterable[Mapping[str, Any]]) -> Iterator[bytes]:
        """Yield the file's bytes in chunks (CSV: header first), consuming ``records`` lazily."""
        ...

    def write_prepared(self, parts: Iterable[bytes | tuple[int, Mapping[str, Any]]]) -> Iterator[bytes]:
        """The file from lines already encoded (bytes) and records still to encode, each with
        its record number for errors: ``(number, record)``."""
        ...


class Format(Protocol):
    """A file format: a name for config and manifests, a file extension, a content type."""

    @property
    def name(self) -> str:
        """The config and manifest name (``csv``, ``jsonl``)."""
        ...

    @property
    def file_extension(self) -> str:
        """The extension before ``.gz`` in the object key (``keys.object_key``)."""
        ...

    @property
    def content_type(self) -> str:
        """The type of the decompressed content (the stored object is ``GZIP_CONTENT_TYPE``)."""
        ...

    def writer(self, entity: str, *, stored: bool = False) -> RowWriter:
        """A writer for one file of ``entity``; encoders are built once per entity and reused.

        ``stored``: records hold the state topic's JSON values (text dates, timestamps and
        decimals) instead of typed ones; the bytes written are the same (``_stored``).
        """
        ...


def neutralise(text: str) -> str:
    """Prefix ``'`` to a string a spreadsheet would run as a formula (CSV string cells only).

    Triggers are OWASP's ``= + - @`` tab and CR, plus ``'`` itself, so the rule is reversible:
    a reader drops one leading ``'`` from any string cell that starts with one.
    """
    return "'" + text if text[:1] in FORMULA_TRIGGERS else text


class CsvFormat:
    """RFC 4180 CSV in UTF-8 (no BOM): header row of the schema's fields, CRLF line ends.

    A cell is quoted only when it holds a comma, a double quote, CR or LF; quotes inside are
    doubled. Null and the empty string are both an empty cell; JSON Lines tells them apart.
    """

    name = "csv"
    file_extension = "csv"
    content_type = "text/csv; charset=utf-8; header=present"

    def writer(self, entity: str, *, stored: bool = False) -> RowWriter:
        encode = stored_encoders(entity, for_csv=True) if stored else encoders(entity, for_csv=True)
        return _Writer(entity, encode, _csv_chunk, header=True)


class JsonLinesFormat:
    """One JSON object per line (LF), keys in schema order, UTF-8; nulls are ``null``."""

    name = "jsonl"
    file_extension = "jsonl"
    content_type = "application/x-ndjson"

    def writer(self, entity: str, *, stored: bool = False) -> RowWriter:
        encode = stored_encoders(entity, for_csv=False) if stored else encoders(entity, for_csv=False)
        return _Writer(entity, encode, _json_chunk, header=False)


CSV = CsvFormat()
JSON_LINES = JsonLinesFormat()
FORMATS: Mapping[str, Format] = {CSV.name: CSV, JSON_LINES.name: JSON_LINES}
"""Formats by their config name."""


GZIP_BLOCK = 1 << 20
"""Bytes of input compressed per task by ``gzip_chunks`` (pigz uses 128 KiB; larger blocks
mean fewer hand-offs between threads for the same output size)."""
_WINDOW = 32 * 1024
"""Deflate's window: each block is compressed with the previous block's last 32 KiB as its
dictionary, so splitting costs almost nothing in size."""


def gzip_chunks(
    chunks: Iterable[bytes], level: int = DEFAULT_GZIP_LEVEL, *, threads: int = 2
) -> Iterator[bytes]:
    """Gzip a stream of chunks into a stream of chunks: one gzip member (RFC 1952), compressed
    on ``threads`` threads at once, as pigz does.

    The input is cut into ``GZIP_BLOCK``-byte blocks; each is deflated on its own, primed with
    the previous block's last 32 KiB, and ends with a sync flush (the last with the final
    block), so the blocks concatenate into one ordinary deflate stream any gzip reader takes.
    zlib releases the GIL while it compresses, so the blocks really run in parallel: gzip level
    6 costs about twice what formatting costs, and on two cores this halves it (docs/decisions/
    0013). The bytes depend only on the input and the level, not on the chunking or the thread
    count; the header has no file name and mtime 0, so a rebuilt state gives the same file.
    """
    if not 0 <= level <= 9:
        raise SinkConfigError("gzip level must be between 0 and 9")
    xfl = 2 if level == 9 else 4 if level < 2 else 0
    yield b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + bytes([xfl, 255])  # no name, mtime 0, OS unknown
    crc, size = 0, 0
    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="gzip") as pool:
        running: collections.deque[Future[bytes]] = collections.deque()
        previous = dictionary = b""
        for block in _blocks(chunks):
            if previous:
                running.append(pool.submit(_deflate, previous, level, dictionary, False))
            dictionary = previous[-_WINDOW:]
            previous = block
            crc, size = zlib.crc32(block, crc), size + len(block)
            while len(running) > 2 * threads or (running and running[0].done()):
                yield running.popleft().result()
        running.append(pool.submit(_deflate, previous, level, dictionary, True))
        while running:
            yield running.popleft().result()
    yield struct.pack("<II", crc, size & 0xFFFFFFFF)


def _blocks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The concatenated chunks in blocks of exactly ``GZIP_BLOCK`` bytes (the last shorter)."""
    pending = bytearray()
    for chunk in chunks:
        pending += chunk
        while len(pending) >= GZIP_BLOCK:
            yield bytes(pending[:GZIP_BLOCK])
            del pending[:GZIP_BLOCK]
    if pending:
        yield bytes(pending)


def _deflate(block: bytes, level: int, dictionary: bytes, last: bool) -> bytes:
    if dictionary:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -15, zdict=dictionary)
    else:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
    return compressor.compress(block) + compressor.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


class _Writer:
    def __init__(
        self,
        entity: str,
        encoders: tuple[tuple[str, Encoder], ...],
        encode_chunk: Callable[[tuple[str, ...], list[list[Value]]], bytes],
        *,
        header: bool,
    ) -> None:
        self._entity = entity
        self._encoders = encoders
        self._names = tuple(name for name, _ in encoders)
        self._encode_chunk = encode_chunk
        self._header = header

    def write_rows(self, records: Iterable[Mapping[str, Any]]) -> Iterator[bytes]:
        if self._header:
            yield _csv_chunk(self._names, [[*self._names]])
        rows: list[list[Value]] = []
        pending: list[bytes] = []
        size = 0
        first_row = 1
        for number, record in enumerate(records, start=1):
            try:
                rows.append([encode(record.get(name)) for name, encode in self._encoders])
            except (TypeError, ValueError, ArithmeticError, AttributeError):
                raise self._failure(record, number) from None
            if len(rows) == _ENCODE_ROWS:
                pending.append(self._chunk(rows, first_row))
                size += len(pending[-1])
                rows, first_row = [], number + 1
                if size >= CHUNK_BYTES:
                    yield b"".join(pending)
                    pending, size = [], 0
        if rows:
            pending.append(self._chunk(rows, first_row))
        if pending:
            yield b"".join(pending)

    def write_prepared(self, parts: Iterable[bytes | tuple[int, Mapping[str, Any]]]) -> Iterator[bytes]:
        """Like ``write_rows`` when most lines arrive encoded (the compiled CSV writer, which
        declines what it is unsure of): bytes pass through, and a ``(record number, record)``
        is encoded here, with every rule and the same error as ``write_rows``."""
        if self._header:
            yield _csv_chunk(self._names, [[*self._names]])
        for part in parts:
            if isinstance(part, bytes):
                yield part
                continue
            number, record = part
            try:
                row = [encode(record.get(name)) for name, encode in self._encoders]
            except (TypeError, ValueError, ArithmeticError, AttributeError):
                raise self._failure(record, number) from None
            yield self._chunk([row], number)

    def _chunk(self, rows: list[list[Value]], first_row: int) -> bytes:
        try:
            return self._encode_chunk(self._names, rows)
        except (UnicodeEncodeError, orjson.JSONEncodeError):  # a lone surrogate: find its cell
            for offset, row in enumerate(rows):
                for name, value in zip(self._names, row, strict=True):
                    if isinstance(value, str) and not _utf8_ok(value):
                        raise EncodeError(
                            self._where(name, first_row + offset, "is not valid UTF-8")
                        ) from None
            raise

    def _failure(self, record: Mapping[str, Any], number: int) -> EncodeError:
        for name, encode in self._encoders:
            try:
                encode(record.get(name))
            except RuleError as exc:
                return EncodeError(self._where(name, number, str(exc)))
            except TypeError:
                return EncodeError(self._where(name, number, "does not hold a value of its schema type"))
            except (ValueError, ArithmeticError, AttributeError):
                return EncodeError(self._where(name, number, "cannot be encoded (out of range)"))
        return EncodeError(self._where("?", number, "cannot be encoded"))  # pragma: no cover

    def _where(self, field: str, row: int, problem: str) -> str:
        return f"{self._entity}.{field} in record {row} of the file {problem}"


def _csv_chunk(names: tuple[str, ...], rows: list[list[Value]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue().encode("utf-8")


def _json_chunk(names: tuple[str, ...], rows: list[list[Value]]) -> bytes:
    dumps, option = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    return b"".join([dumps(dict(zip(names, row, strict=True)), option=option) for row in rows])


def _utf8_ok(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
