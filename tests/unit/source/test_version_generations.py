"""The version order with re-snapshots (docs/decisions/0019), as pure functions.

A model of what Debezium writes to one source partition (measured with PostgreSQL 15 and
Debezium 3.7, ../shared/FACTS.md): an initial snapshot's reads share one LSN (``sequence`` =
``[null, L_snap]``); each streamed change is ``[last commit LSN or null, lsn]``, null for the
first transaction after a (re)start; a lost slot drops the changes of the gap and is followed by
a re-snapshot at a higher LSN; an incremental snapshot's reads are ``[X, X]`` at the stream
position; any record may be delivered twice. The properties: stamped in log order, the versions
of one row follow the database's own order of its states, and the sweep of a completed
re-snapshot leaves exactly the rows that exist.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from connector.ingest.generations import Generations, parse_metadata
from connector.source.version import (
    NO_LAST_COMMIT,
    Version,
    postgres_version,
    predates,
    snapshot_generation,
    with_generation,
)

TOPIC = "pg.public.family"


def _read(lsn: int, offset: int) -> Version:
    return postgres_version({"lsn": lsn, "sequence": f'[null,"{lsn}"]'}, snapshot=True, offset=offset)


def _change(last_commit: int | None, lsn: int, offset: int) -> Version:
    first = "null" if last_commit is None else f'"{last_commit}"'
    return postgres_version({"lsn": lsn, "sequence": f'[{first},"{lsn}"]'}, snapshot=False, offset=offset)


def _incremental(position: int, offset: int) -> Version:
    return postgres_version(
        {"lsn": None, "sequence": [str(position), str(position)]}, snapshot=False, offset=offset
    )


def test_a_snapshot_read_carries_twice_its_lsn_and_a_change_the_streamed_phase() -> None:
    assert _read(26380000, 4) == Version(2 * 26380000, 26380000, 26380000, NO_LAST_COMMIT, 4)
    assert _change(None, 26384624, 5) == Version(1, 26384624, 26384624, NO_LAST_COMMIT, 5)
    assert _change(26384624, 26384800, 6) == Version(1, 26384624, 26384800, 0, 6)
    assert _incremental(26390000, 6) == Version(1, 26390000, 26390000, 0, 6)
    assert snapshot_generation(_read(26380000, 4)) == 26380000
    assert snapshot_generation(_change(None, 26384624, 5)) is None
    assert with_generation(_change(None, 26384624, 5), 26380000).phase == 2 * 26380000 + 1
    assert with_generation(_read(7, 0), 26380000) == _read(7, 0)  # a read is its own generation


def test_the_measured_re_snapshot_outranks_the_gap_and_loses_to_what_follows() -> None:
    """The harness's own figures: a snapshot, streaming, a slot dropped, a re-snapshot at
    26387816, streaming again from a null last commit; an incremental read in between."""
    gens = Generations()
    stamp = lambda v: gens.stamp(TOPIC, 0, v)  # noqa: E731 (log order, one partition)
    first_read = stamp(_read(26380000, 0))
    streamed = stamp(_change(None, 26384624, 1))
    later = stamp(_change(26384624, 26384800, 2))
    reread = stamp(_read(26387816, 3))  # the re-snapshot after the gap
    duplicate_old_read = stamp(_read(26380000, 4))  # a redelivered read of the first snapshot
    # The first transaction after it (a null last commit: its change's LSN, marked), then an
    # incremental read at the stream position, a commit's LSN past that change's.
    after = stamp(_change(None, 26387990, 5))
    incremental = stamp(_incremental(26388000, 6))
    after_incremental = stamp(_change(26388000, 26388100, 7))
    assert first_read < streamed < later < reread < after < incremental < after_incremental
    assert duplicate_old_read < streamed
    assert gens.get(TOPIC, 0) == 26387816  # a redelivered older read does not lower it
    assert predates(later, 26387816)
    assert predates(first_read, 26387816)
    assert not predates(reread, 26387816)
    assert not predates(after, 26387816)


def test_a_change_after_the_re_snapshot_in_a_partition_it_read_nothing_from_is_not_swept() -> None:
    gens = Generations()
    gens.stamp(TOPIC, 1, _read(100, 0))
    old = gens.stamp(TOPIC, 1, _change(140, 150, 1))
    new = gens.stamp(TOPIC, 1, _change(255, 260, 2))  # the re-snapshot (at 200) read nothing here
    assert old.phase == new.phase == 201
    assert predates(old, 200)
    assert not predates(new, 200)


def test_the_first_transaction_after_a_snapshot_is_never_swept_by_its_position() -> None:
    """Measured (tests/integration/test_source_snapshot_boundary.py): a transaction in flight
    as Debezium's snapshot begins is streamed after it, first, as ``[null, lsn]`` with its LSN
    *below* the snapshot's; in a partition the snapshot read nothing from, its position alone
    made it predate the snapshot, and its row was swept from every delivery."""
    gens = Generations()
    straddler = gens.stamp(TOPIC, 2, _change(None, 190, 0))  # the snapshot (at 200) read nothing here
    assert straddler.phase == 1
    assert straddler.row == NO_LAST_COMMIT
    assert not predates(straddler, 200)
    second = gens.stamp(TOPIC, 2, _change(215, 195, 1))  # the next: its last commit is past 200
    assert not predates(second, 200)
    # A read has no last commit either; an older snapshot's read still predates a newer one.
    assert predates(_read(100, 2), 200)


def test_generations_move_with_the_commit_only() -> None:
    gens = Generations()
    gens.stamp(TOPIC, 0, _read(500, 0))
    assert gens.metadata(TOPIC, 0) == "g=500"
    gens.abort()  # the batch is consumed again: its read opens the generation again then
    assert gens.get(TOPIC, 0) == 0
    assert gens.metadata(TOPIC, 0) is None
    gens.stamp(TOPIC, 0, _read(500, 0))
    gens.commit()
    gens.abort()
    assert gens.get(TOPIC, 0) == 500
    [tp] = gens.offsets([(TOPIC, 0, 9)])
    assert (tp.offset, tp.metadata) == (9, "g=500")
    assert parse_metadata(tp.metadata) == 500
    assert parse_metadata(None) == parse_metadata("") == parse_metadata("something else") == 0
    fresh = Generations()
    fresh.load([tp])
    assert fresh.get(TOPIC, 0) == 500
    fresh.forget([tp])
    assert fresh.get(TOPIC, 0) == 0


def test_the_compiled_paths_observation_moves_the_generation_as_stamp_does() -> None:
    gens = Generations()
    gens.observe(TOPIC, 0, _read(700, 0).phase)
    assert gens.get(TOPIC, 0) == 700
    gens.observe(TOPIC, 0, 2 * 700 + 1)
    gens.observe(TOPIC, 0, _read(300, 0).phase)
    assert gens.get(TOPIC, 0) == 700


# -- the model -------------------------------------------------------------------------------

ROWS = 3


@dataclass(frozen=True)
class Entry:
    """One record of the partition's log: which row, when it happened, what it says."""

    row: int
    time: int
    kind: str  # "read", "change", "incremental"
    deleted: bool
    lsn: int
    last_commit: int | None = None


def _history(steps: list[tuple[str, int]]) -> tuple[list[Entry], dict[int, bool], int]:
    """The log of a history of steps, the rows that exist at its end, and the generation of
    its last snapshot. Steps: ("write"|"delete", row), ("gap", _): the slot is lost, changes
    until the next snapshot never reach the log, ("snapshot", _), ("incremental", row),
    ("redeliver", k): a record again, any snapshot's read or a change since the last snapshot
    (Debezium re-emits changes from the slot position it resumes at; a lost slot or a new
    snapshot leaves the older changes behind)."""
    log: list[Entry] = []
    exists = dict.fromkeys(range(ROWS), False)
    lsn, last_commit, in_gap, generation, since = 1000, None, False, 0, 0
    for index, (step, arg) in enumerate([("snapshot", 0), *steps]):
        lsn += 10
        if step == "snapshot":
            in_gap, last_commit, generation, since = False, None, lsn, len(log)
            log += [Entry(row, index, "read", False, lsn) for row in range(ROWS) if exists[row]]
        elif step in ("write", "delete"):
            if step == "delete" and not exists[arg]:
                continue
            exists[arg] = step == "write"
            if not in_gap:
                log.append(Entry(arg, index, "change", step == "delete", lsn, last_commit))
            last_commit = lsn + 1  # the commit record follows the change
        elif step == "gap":
            in_gap = True
        elif step == "incremental" and not in_gap and exists[arg] and last_commit is not None:
            log.append(Entry(arg, index, "incremental", False, last_commit))
        elif step == "redeliver" and log:
            again = log[arg % len(log)]
            if again.kind == "read" or arg % len(log) >= since:
                log.append(again)
    if in_gap:  # a lost slot always ends with a re-snapshot
        lsn += 10
        generation = lsn
        log += [Entry(row, 10**6, "read", False, lsn) for row in range(ROWS) if exists[row]]
    return log, exists, generation


def _version(entry: Entry, offset: int) -> Version:
    if entry.kind == "read":
        return _read(entry.lsn, offset)
    if entry.kind == "incremental":
        return _incremental(entry.lsn, offset)
    return _change(entry.last_commit, entry.lsn, offset)


STEPS = st.lists(
    st.tuples(
        st.sampled_from(["write", "write", "delete", "gap", "snapshot", "incremental", "redeliver"]),
        st.integers(0, 40),
    ).map(lambda s: (s[0], s[1] % ROWS if s[0] in ("write", "delete", "incremental") else s[1])),
    max_size=40,
)


@settings(max_examples=400, deadline=None)
@given(STEPS)
def test_stamped_in_log_order_a_rows_versions_follow_the_database(steps: list[tuple[str, int]]) -> None:
    log, exists, generation = _history(steps)
    gens = Generations()
    stamped = [(entry, gens.stamp(TOPIC, 0, _version(entry, offset))) for offset, entry in enumerate(log)]
    for a, va in stamped:
        for b, vb in stamped:
            if a.row == b.row and a.time < b.time:
                # Two reads of one position (incremental reads with no change between) are the
                # same state: equal, the later offset wins. A change is always strictly newer.
                assert va[:4] < vb[:4] or (va[:4] == vb[:4] and b.kind != "change"), (a, b, va, vb)
    # The newest version of each row wins the merge; the sweep of the last snapshot leaves
    # exactly the rows that exist.
    newest: dict[int, tuple[Version, Entry]] = {}
    for entry, version in stamped:
        if entry.row not in newest or version > newest[entry.row][0]:
            newest[entry.row] = (version, entry)
    for row in range(ROWS):
        found = newest.get(row)
        live = found is not None and not found[1].deleted and not predates(found[0], generation)
        # The one exception (docs/decisions/0019): the first transaction after an older snapshot
        # cannot be placed by its position, so a row it wrote last and the gap deleted is kept.
        unplaced = found is not None and found[1].kind == "change" and found[1].last_commit is None
        assert live == exists[row] or (unplaced and live and not exists[row]), (row, found, generation)
