"""File formats for the daily snapshot: CSV and JSON Lines, streamed, and a streaming gzip.

A format turns an entity's records into bytes; storage (S3, SFTP) and keys are separate
(``keys.py``). Unlike STYLE.md's ``serialize(rows) -> bytes``, a writer yields chunks: an
entity can hold millions of records, and the file must stream to a multipart upload with flat
memory. ``docs/file-format.md`` is the reader's side of these rules, for CareCloud's ingest team.
The gzip stream is ``_gzip``'s (re-exported here).

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

import csv
import io
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

import orjson

from connector.sinks._cells import FORMULA_TRIGGERS, Encoder, RuleError, Value, encoders
from connector.sinks._gzip import DEFAULT_GZIP_LEVEL, gzip_chunks
from connector.sinks._gzip import GZIP_BLOCK as GZIP_BLOCK  # re-exported: the tests size their input by it
from connector.sinks._stored import stored_encoders
from connector.sinks.exceptions import EncodeError

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
