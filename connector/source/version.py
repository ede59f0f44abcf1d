"""The version key: a total order of the changes to one source row.

Why not ``ts_ms`` or the raw per-event LSN: concurrent PostgreSQL transactions interleave in
the WAL, so a long transaction's events carry LSNs *below* those of shorter transactions that
committed while it was open, yet Debezium (pgoutput) emits them later, in commit order.
Debezium's ``source.sequence`` is ``[last_commit_lsn, current_lsn]``: the first element grows
with every commit and the second orders the events inside one transaction, so the pair,
compared lexicographically, follows commit order. MySQL's binlog is already in commit order:
(file number, position, row). The native envelope carries its own ``SourceVersion``.

A snapshot read (``op=r``) must never outrank a streaming change of the same row (a
re-snapshot after newer changes would otherwise regress the row), hence ``phase`` first. The
Kafka offset breaks ties, so a replay of the same message compares equal and is ignored.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

from connector.errors import DecodeError

__all__ = [
    "PHASE_SNAPSHOT",
    "PHASE_STREAM",
    "Version",
    "mysql_version",
    "native_version",
    "postgres_version",
]

_U64_MAX = 2**64 - 1
PHASE_SNAPSHOT = 0
PHASE_STREAM = 1


class Version(NamedTuple):
    """Comparable position of one change; tuples compare field by field."""

    phase: int
    major: int
    minor: int
    row: int
    offset: int


def _lsn(value: Any, field: str) -> int:
    """LSNs arrive as JSON numbers or decimal strings (in ``sequence``); both must be exact."""
    if type(value) is str and value.isascii() and value.isdigit() and len(value) <= 20:
        number = int(value)  # the common form, from ``sequence``: checked first
        if number <= _U64_MAX:  # an LSN is a u64; a larger one could not even be stored
            return number
        raise DecodeError(f"source.{field} is beyond a 64-bit LSN", reason="bad_source_position")
    if value is None:
        return 0
    if isinstance(value, bool):
        raise DecodeError(f"source.{field} is not an LSN", reason="bad_source_position")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:  # a str subclass
        return _lsn(str(value), field)
    raise DecodeError(f"source.{field} is not an LSN", reason="bad_source_position")


def postgres_version(source: dict[str, Any], *, snapshot: bool, offset: int) -> Version:
    """Version of a PostgreSQL Debezium event from ``source.sequence``, else ``source.lsn``."""
    phase = PHASE_SNAPSHOT if snapshot else PHASE_STREAM
    seq = source.get("sequence")
    if seq is not None:
        try:
            pair = orjson.loads(seq) if isinstance(seq, str | bytes) else seq
        except orjson.JSONDecodeError:
            raise DecodeError("source.sequence is not a JSON array", reason="bad_source_position") from None
        if not isinstance(pair, list) or len(pair) != 2:
            raise DecodeError("source.sequence is not a two-element array", reason="bad_source_position")
        return Version(phase, _lsn(pair[0], "sequence[0]"), _lsn(pair[1], "sequence[1]"), 0, offset)
    if "lsn" in source and source["lsn"] is not None:
        # Without ``sequence`` the commit order is unknown: order by the event LSN alone, which
        # is right for events of one transaction and for non-overlapping transactions.
        return Version(phase, _lsn(source["lsn"], "lsn"), 0, 0, offset)
    raise DecodeError("PostgreSQL source block has neither sequence nor lsn", reason="bad_source_position")


def mysql_version(source: dict[str, Any], *, snapshot: bool, offset: int) -> Version:
    """Version of a MySQL Debezium event: binlog file number, position, row in the event."""
    phase = PHASE_SNAPSHOT if snapshot else PHASE_STREAM
    file = source.get("file")
    pos = source.get("pos")
    if not isinstance(file, str) or not isinstance(pos, int) or isinstance(pos, bool):
        raise DecodeError("MySQL source block lacks file/pos", reason="bad_source_position")
    number = file.rpartition(".")[2]  # "mysql-bin.000003" -> 3; no regex on the per-event path
    if "." not in file or not number.isascii() or not number.isdigit() or len(number) > 18:
        raise DecodeError("source.file is not a binlog file name", reason="bad_source_position")
    row = source.get("row") or 0
    if not isinstance(row, int):
        raise DecodeError("source.row is not an integer", reason="bad_source_position")
    return Version(phase, int(number), pos, row, offset)


def native_version(source_version: int, *, offset: int) -> Version:
    """Version of a native-envelope event: the producer's own ``SourceVersion``."""
    return Version(PHASE_STREAM, source_version, 0, 0, offset)
