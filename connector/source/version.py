"""The version key: a total order of the changes to one source row.

Why not ``ts_ms`` or the raw per-event LSN: concurrent PostgreSQL transactions interleave in
the WAL, so a long transaction's events carry LSNs *below* those of shorter transactions that
committed while it was open, yet Debezium (pgoutput) emits them later, in commit order.
Debezium's ``source.sequence`` is ``[last_commit_lsn, current_lsn]``: the first element grows
with every commit and the second orders the events inside one transaction, so the pair,
compared lexicographically, follows commit order. MySQL's binlog is already in commit order:
(file number, position, row). The native envelope carries its own ``SourceVersion``.

``phase`` comes first and carries the snapshot generation (docs/decisions/0019). Each source
topic partition has a generation ``G``: the snapshot LSN (``L_snap``) of the newest initial
snapshot or re-snapshot read seen in that partition's log, 0 before any. A snapshot read taken
at ``L_snap`` gets phase ``2 * L_snap``; a streamed change, and an incremental-snapshot read
(``source.snapshot == "incremental"``, ordered by its ``sequence`` among the streamed changes),
gets ``2 * G + 1`` and then its sequence. So a re-snapshot taken after a lost replication slot
outranks every change streamed before it (``L_snap`` is above every earlier LSN), and every
change streamed after it outranks the re-snapshot; a read redelivered from an older snapshot
never does. Rows written before generations existed (phase 0 reads, phase 1 changes) are
generation 0 and compare as before.

The decoders cannot know ``G`` (it is a property of the log, not of the message), so they
write generation 0 (a streamed change's phase is 1) and the ingest re-stamps it with the
partition's generation (``with_generation``, ``connector.ingest.generations``). MySQL keeps the
old order (reads 0, changes 1): its re-snapshots are not generation-tagged yet. The Kafka
offset breaks ties, so a replay of the same message compares equal and is ignored.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

from connector.errors import DecodeError

__all__ = [
    "NO_LAST_COMMIT",
    "PHASE_SNAPSHOT",
    "PHASE_STREAM",
    "Version",
    "mysql_version",
    "native_version",
    "postgres_version",
    "predates",
    "snapshot_generation",
    "with_generation",
]

_U64_MAX = 2**64 - 1
_LSN_GENERATION_MAX = 2**63 - 1
"""The largest snapshot LSN a generation can be: ``2 * G + 1`` is stored as a u64."""
PHASE_SNAPSHOT = 0
"""A snapshot read of generation 0 (MySQL, and rows written before generations existed)."""
PHASE_STREAM = 1
"""A streamed change of generation 0; ``with_generation`` lifts it to ``2 * G + 1``."""
NO_LAST_COMMIT = 1
"""``Version.row`` of a PostgreSQL position whose last commit is null (``[null, lsn]``): a
snapshot's read, or the first transaction streamed after a snapshot, which ``predates`` cannot
place (its LSNs may lie below the snapshot's). Other PostgreSQL positions have row 0; the two
never share a ``(major, minor)``, so the order is unchanged."""


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
    """Version of a PostgreSQL Debezium event from ``source.sequence``, else ``source.lsn``.

    ``snapshot``: an initial snapshot's (or a re-snapshot's) read, whose phase is twice its
    snapshot LSN; everything else, incremental-snapshot reads included, is a streamed change of
    generation 0 here (``with_generation`` re-stamps it).
    """
    version = _postgres_position(source, offset)
    if snapshot:
        lsn = max(version.major, version.minor)
        if lsn > _LSN_GENERATION_MAX:  # its phase, and its changes' (2 * G + 1), must fit a u64
            raise DecodeError("a snapshot's LSN is beyond 63 bits", reason="bad_source_position")
        return Version(2 * lsn, version.major, version.minor, version.row, version.offset)
    return version


def _postgres_position(source: dict[str, Any], offset: int) -> Version:
    phase = PHASE_STREAM
    seq = source.get("sequence")
    if seq is not None:
        try:
            pair = orjson.loads(seq) if isinstance(seq, str | bytes) else seq
        except orjson.JSONDecodeError:
            raise DecodeError("source.sequence is not a JSON array", reason="bad_source_position") from None
        if not isinstance(pair, list) or len(pair) != 2:
            raise DecodeError("source.sequence is not a two-element array", reason="bad_source_position")
        minor = _lsn(pair[1], "sequence[1]")
        # The first transaction after a (re-)snapshot has no last commit (null): it follows every
        # commit before its own LSN, so that LSN stands in for it; 0 would put it below the
        # changes streamed before a lost slot (docs/decisions/0019).
        if pair[0] is None:
            return Version(phase, minor, minor, NO_LAST_COMMIT, offset)
        return Version(phase, _lsn(pair[0], "sequence[0]"), minor, 0, offset)
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


def with_generation(version: Version, generation: int) -> Version:
    """``version`` of a streamed change (odd phase) re-stamped into ``generation``; a snapshot
    read's (even phase) is its own generation and stays as it is."""
    if version.phase & 1 and generation:
        return Version(2 * generation + 1, version.major, version.minor, version.row, version.offset)
    return version


def snapshot_generation(version: Version) -> int | None:
    """The generation a snapshot read opens (its snapshot LSN), None for a streamed change."""
    return None if version.phase & 1 else version.phase >> 1


def predates(version: Version, generation: int) -> bool:
    """Whether a row last written at ``version`` is older than the snapshot of ``generation``
    (taken at LSN ``generation``), so a completed snapshot that did not read it means the row
    was deleted before that snapshot (the sweep, docs/decisions/0019).

    A read of an older snapshot predates it. A streamed change of an older generation predates
    it unless its own position (``sequence``) is at or past the snapshot's LSN: a change
    streamed after the re-snapshot into a partition that the re-snapshot read nothing from is
    still of the older generation there, but its LSN is above the snapshot's.

    Except a change whose position cannot be placed: the first transaction streamed after a
    snapshot has no last commit (``[null, lsn]``, marked ``row == NO_LAST_COMMIT``), and when it
    was in flight as the snapshot began, its changes' LSNs lie *below* the snapshot's although
    it committed after it (tests/integration/test_source_snapshot_boundary.py: a row inserted
    so was swept from every snapshot). Every later transaction's last commit is at or past the
    snapshot's LSN, so only this one is ambiguous, and it is never swept. The cost: a row whose
    last change was the first transaction after an *older* snapshot, deleted during a lost
    slot's gap, is delivered until its source writes it again (docs/decisions/0019).
    """
    if version.phase >= 2 * generation:
        return False
    if not version.phase & 1:
        return True
    if version.row == NO_LAST_COMMIT and version.major == version.minor:
        return False
    return max(version.major, version.minor) < generation
