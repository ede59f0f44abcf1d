"""The re-mapping pass's decisions (``connector.ingest.remap``), over a real local store.

The state is built by the ingest's own merge from generated Family events under the current
mapping; a new mapping (an enum map change and a newly mapped column) is then brought in by the
pass, one committed step at a time, and compared with what the new mapping makes of each
family's last event (the expected state under the new mapping), never a mix.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from connector.devtools.generator import family_events
from connector.ingest.batch import BatchView
from connector.ingest.remap import Progress, RemapPass, progress_key
from connector.ingest.transaction import Transactions
from connector.mapping import Mapper, parse_mapping
from connector.source import Position, make_decoder
from connector.state.apply import MemoryStore, Outcome, apply_change
from connector.state.carry import CarryOffer, decode_offer, encode_offer, receive
from connector.state.codec import decode_row, encode_row, row_mapping_version, state_key, stored_values
from connector.state.mapping_registry import Registry
from connector.state.resolve import MIXED_MAPPING, merge
from connector.state.store import PartitionStore
from tests.unit.family_moves import FAMILY_MAPPING, FAMILY_TOPIC, family_update

MAPPING, TOPIC = FAMILY_MAPPING, FAMILY_TOPIC
# The rollout: T now maps to SUSPENDED, and PostalCode reads a column the old mapping left out.
NEW = MAPPING.replace("T: TERMINATED}", "T: SUSPENDED}").replace("{const: null}", "{path: address.zip}")
# A mapping the stored rows partly fail: P is no longer a known symbol.
FAILING = MAPPING.replace("P: PENDING, ", "")


class Emitted:
    """The view's emit: what a step produced to the state topic, in order."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes | None]] = []

    def __call__(self, key: bytes, value: bytes | None) -> None:
        self.records.append((key, value))

    def finish(self) -> None:
        pass


class Producer:
    """The transactional producer's ``produce``, as the pass calls it for a dead letter."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, list[tuple[str, Any]]]] = []

    def produce(
        self, topic: str, value: bytes | None, key: bytes | None, headers: Any = None, partition: int = -1
    ) -> None:
        self.sent.append((topic, value, key, headers))


def _events(families: int) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in family_events(families, 2, seed=5) if v is not None]


def _store(
    tmp_path: Path, text: str, events: list[tuple[bytes, bytes]], *, source: bool = True
) -> PartitionStore:
    """The partition's store as ingest leaves it after ``events`` under mapping ``text``."""
    mapper = Mapper(parse_mapping(text), source_columns=source)
    decoder, rows = make_decoder("debezium-json"), MemoryStore()
    for offset, (key, value) in enumerate(events):
        event = decoder.decode(key, value, None, Position(TOPIC, 0, offset))
        assert event is not None
        apply_change(rows, mapper.map(event))
    store = PartitionStore(tmp_path / "p0")
    store.write({state_key(e, i): encode_row(row) for (e, i), row in rows.items()}, len(events))
    return store


def _expected(text: str, events: list[tuple[bytes, bytes]]) -> dict[bytes, dict[str, Any]]:
    """Each family's values under mapping ``text``, mapped from its last event alone."""
    mapper, decoder = Mapper(parse_mapping(text)), make_decoder("debezium-json")
    out = {}
    for offset, (key, value) in enumerate(events):
        event = decoder.decode(key, value, None, Position(TOPIC, 0, offset))
        assert event is not None
        change = mapper.map(event)
        row = merge(None, change)
        assert row is not None
        out[state_key(change.entity, change.entity_id)] = stored_values(encode_row(row))
    return out


def _pass(text: str, rows_per_batch: int = 1000, reasons: list[str] | None = None) -> RemapPass:
    mapper = Mapper(parse_mapping(text), source_columns=True)
    return RemapPass(
        mapper,
        {},
        rows_per_batch=rows_per_batch,
        state_topic="state",
        dlq_topic="dlq",
        on_dead_letter=None if reasons is None else reasons.append,
    )


def _step(
    remap: RemapPass, store: PartitionStore, producer: Producer, *, commit: bool = True
) -> dict[str, int]:
    """One transaction's share: committed (written to the store) or, like a kill, not."""
    view = BatchView(store, Emitted(), 0)
    counts = remap.step(0, view, producer)  # type: ignore[arg-type]
    if commit:
        store.write(view.encoded, store.next_offset + 1)
    return counts


def _rows(store: PartitionStore) -> dict[bytes, bytes]:
    return {k: v for k, v in store.items() if k[:1] != b"~"}


def test_rows_are_re_mapped_from_their_source_columns_to_what_the_new_mapping_makes(tmp_path: Path) -> None:
    events = _events(60)
    store = _store(tmp_path, MAPPING, events)
    before = _rows(store)
    remap, producer = _pass(NEW), Producer()
    assert remap.due({0: store}) == [0]
    counts = _step(remap, store, producer)
    assert counts == {"remapped": 60, "failed": 0, "no_source": 0}
    new_version = remap.versions["Family"]
    expected = _expected(NEW, events)
    for key, raw in _rows(store).items():
        assert row_mapping_version(raw) == new_version
        assert stored_values(raw) == expected[key]
        old, now = decode_row("Family", before[key], typed=False), decode_row("Family", raw, typed=False)
        assert (now.version, now.source) == (old.version, old.source)  # only the values moved
    assert any(v["Status"] == "SUSPENDED" and v["PostalCode"] for v in expected.values())
    assert not producer.sent
    assert remap.due({0: store}) == []  # the sweep is recorded as finished


def test_a_killed_pass_resumes_after_its_last_commit_and_ends_as_one_uninterrupted_pass(
    tmp_path: Path,
) -> None:
    events = _events(50)
    store = _store(tmp_path, MAPPING, events)
    producer = Producer()
    _step(_pass(NEW, rows_per_batch=7), store, producer)
    _step(_pass(NEW, rows_per_batch=7), store, producer, commit=False)  # killed before its commit
    remap = _pass(NEW, rows_per_batch=7)  # the restarted process
    steps = 1
    while remap.due({0: store}):
        _step(remap, store, producer)
        steps += 1
    assert steps == 1 + 7  # 50 rows, 7 a step: the 7 committed were not done again (43 = 7 steps)
    progress = Progress.decode(store.get(progress_key(0)) or b"")
    assert progress.done
    assert progress.counts == {"remapped": 50, "failed": 0, "no_source": 0}
    expected = _expected(NEW, events)
    assert {k: stored_values(v) for k, v in _rows(store).items()} == expected


def test_rows_the_new_mapping_refuses_are_dead_lettered_once_and_keep_their_version(tmp_path: Path) -> None:
    events = _events(40)
    store = _store(tmp_path, MAPPING, events)
    old_version = row_mapping_version(next(iter(_rows(store).values())))
    producer = Producer()
    _step(_pass(FAILING, rows_per_batch=25), store, producer, commit=False)  # killed: nothing stays
    assert producer.sent  # dead letters of the aborted transaction: aborted with it
    producer.sent.clear()
    reasons: list[str] = []
    remap = _pass(FAILING, rows_per_batch=5, reasons=reasons)
    while remap.due({0: store}):
        _step(remap, store, producer)
    pending = {k for k, v in _rows(store).items() if stored_values(v)["Status"] == "PENDING"}
    assert pending
    assert Counter(key for _, _, key, _ in producer.sent) == dict.fromkeys(pending, 1)
    assert reasons == ["unknown_enum_symbol"] * len(pending)  # counted as an event's dead letter
    for topic, value, _, headers in producer.sent:
        names = dict(headers)
        assert (topic, value) == ("dlq", None)  # by reference: never the row's values
        assert names["carecloud.reason"] == b"unknown_enum_symbol"
        assert names["carecloud.topic"] == b"state"
    for key, raw in _rows(store).items():
        wanted = old_version if key in pending else remap.versions["Family"]
        assert row_mapping_version(raw) == wanted
    progress = Progress.decode(store.get(progress_key(0)) or b"")
    assert progress.counts["failed"] == len(pending) == progress.kept


def test_rows_without_source_columns_are_counted_and_left_under_their_version(tmp_path: Path) -> None:
    events = _events(20)
    store = _store(tmp_path, MAPPING, events, source=False)
    before = _rows(store)
    remap, producer = _pass(NEW), Producer()
    assert _step(remap, store, producer) == {"remapped": 0, "failed": 0, "no_source": 20}
    assert _rows(store) == before
    assert remap.kept == {0: 20}
    assert remap.left == {0: 0}
    assert remap.due({0: store}) == []  # visited: not visited again until the mapping changes


def test_a_sweep_counts_the_rows_left_and_a_new_mapping_starts_a_new_sweep(tmp_path: Path) -> None:
    events = _events(30)
    store = _store(tmp_path, MAPPING, events)
    remap, producer = _pass(NEW, rows_per_batch=10), Producer()
    _step(remap, store, producer)
    assert remap.left == {0: 20}
    while remap.due({0: store}):
        _step(remap, store, producer)
    assert remap.left == {0: 0}
    # The same mapping again: nothing to do; the old one back: every row again.
    assert _pass(NEW).due({0: store}) == []
    back = _pass(MAPPING)
    assert back.due({0: store}) == [0]
    assert _step(back, store, producer)["remapped"] == 30
    assert {k: stored_values(v) for k, v in _rows(store).items()} == _expected(MAPPING, events)


def test_current_rows_delete_markers_and_reserved_records_are_left_alone(tmp_path: Path) -> None:
    events = [(k, v) for k, v in family_events(12, 1, seed=3, deletes_every=4) if v is not None]
    store = _store(tmp_path, MAPPING, events)
    markers = {k for k, v in _rows(store).items() if b'"d":' in v}
    assert markers
    store.write({b"~tx/x": b"{}"}, store.next_offset + 1)
    remap, producer = _pass(NEW), Producer()
    counts = _step(remap, store, producer)
    assert counts["remapped"] == 12 - len(markers)
    assert all(_rows(store)[k] == v for k, v in store.items() if k in markers)
    assert store.get(b"~tx/x") == b"{}"
    assert _step(_pass(NEW), store, producer) == {"remapped": 0, "failed": 0, "no_source": 0}


def test_each_step_copies_its_progress_to_the_registry_where_the_wait_policy_reads_it(tmp_path: Path) -> None:
    store = _store(tmp_path, MAPPING, _events(30))
    mapper = Mapper(parse_mapping(NEW), source_columns=True)
    remap = RemapPass(
        mapper, {}, rows_per_batch=20, state_topic="state", dlq_topic="dlq", registry_topic="reg"
    )
    producer, registry = Producer(), Registry()
    _step(remap, store, producer)
    for topic, value, key, _ in producer.sent:
        assert topic == "reg"
        assert key is not None
        registry.absorb(key, value)
    assert registry.remap_pending(1) == [0]  # 20 of 30 done
    producer.sent.clear()
    _step(remap, store, producer)
    for _, value, key, _ in producer.sent:
        assert key is not None
        registry.absorb(key, value)
    assert registry.remap_pending(1) == []
    assert registry.remap_pending(2) == [1]  # a partition whose pass has not reported yet


def test_a_store_larger_than_a_step_is_counted_over_several_steps_before_its_sweep(tmp_path: Path) -> None:
    store = _store(tmp_path, MAPPING, _events(120))
    remap, producer = _pass(NEW, rows_per_batch=1), Producer()  # a step looks at 50 rows at most
    assert _step(remap, store, producer)["remapped"] == 0
    assert _step(remap, store, producer)["remapped"] == 0
    assert _step(remap, store, producer)["remapped"] == 1  # the count ends, the sweep begins
    assert remap.left == {0: 119}
    progress = Progress.decode(store.get(progress_key(0)) or b"")
    assert progress.counted
    assert progress.left == 119


def test_rows_of_a_table_the_mapping_no_longer_has_are_dead_letters_naming_it(tmp_path: Path) -> None:
    store = _store(tmp_path, MAPPING, _events(10))
    renamed = MAPPING.replace("  public.family:", "  public.households:")
    remap, producer = _pass(renamed), Producer()
    assert _step(remap, store, producer) == {"remapped": 0, "failed": 10, "no_source": 0}
    assert {dict(headers)["carecloud.reason"] for _, _, _, headers in producer.sent} == {b"unknown_table"}


def test_a_row_its_source_columns_take_over_the_limit_is_written_without_them(tmp_path: Path) -> None:
    key, value = _events(1)[0]
    event = make_decoder("debezium-json").decode(key, value, None, Position(TOPIC, 0, 0))
    assert event is not None
    change = Mapper(parse_mapping(MAPPING), source_columns=True).map(event)
    row = merge(None, change)
    assert row is not None
    assert row.source is not None
    bare = encode_row(replace(row, source=None))
    state = state_key(change.entity, change.entity_id)
    view = BatchView(PartitionStore(tmp_path / "p0"), Emitted(), 0, row_limit=len(state) + len(bare))
    assert apply_change(view, change) is Outcome.APPLIED  # applied, as before rows kept sources
    assert view.sources_dropped == 1
    assert view.encoded[state] == bare


# -- a primary-key carry between two mapping versions (decisions 0021, 0025) -----------------

CARRIED = frozenset({"family_name", "status", "notes"})
"""The create's unchanged-TOAST columns: the name, status (whose mapping the rollout changes: T
is now SUSPENDED) and a column no field reads."""


def _one_batch(
    store: PartitionStore,
    work: list[Any],
    remap: RemapPass | None,
    sent: Producer | None = None,
    due: bool = False,
) -> tuple[BatchView, Counter[str]]:
    """One committed batch of ``work`` (changes, and offers as the carry topic brings them);
    with ``remap``, the pass's share as the ingest runs it (``Transactions._remap_step``): a
    step when ``due``, else in a partition whose sweep is not due (done, or never started)."""
    view = BatchView(store, Emitted(), 0)
    for item in work:
        if isinstance(item, CarryOffer):
            receive(view, decode_offer(*encode_offer(item)))
        else:
            assert apply_change(view, item) is Outcome.APPLIED
    counts: Counter[str] = Counter()
    if remap is not None:
        ingest = SimpleNamespace(remap=remap, stores={0: store}, _emitter=None)
        due_now = [0] if due else []
        counts = Transactions._remap_step(ingest, due_now, {0: view}, sent or Producer(), 0, 1 << 62)  # type: ignore[arg-type]
    store.write(view.encoded, store.next_offset + 1)
    return view, counts


@pytest.mark.parametrize("due", [False, True], ids=["swept", "due"])
@pytest.mark.parametrize(
    ("case", "where"),
    [
        ("donor-older", "local"),
        ("donor-older", "offer-then-create"),
        ("donor-older", "create-then-offer"),
        ("row-older", "create-then-offer"),
    ],
)
def test_a_row_a_carry_filled_across_mapping_versions_is_re_mapped_in_its_batch(
    tmp_path: Path, case: str, where: str, due: bool
) -> None:
    """``donor-older``: a mapping is rolled out; the old key's row is still under the old one
    (the sweep has not reached it); then the primary-key update. ``row-older``: the create came
    before the rollout and waits for its values in another partition (in the donor's, it takes
    them at once), and the donor was re-mapped before its delete. In
    either, the batch that fills the new row maps it again at once, in its own partition, with
    no sweep due there: it ends under the current mapping with the current mapping's value of
    the carried column (SUSPENDED, not the old TERMINATED), never a mix under one label.
    ``due``: the same with the partition's sweep due (its step runs in the batch)."""
    donor, mover = (MAPPING, NEW) if case == "donor-older" else (NEW, MAPPING)
    old, delete, create = family_update(CARRIED, donor, mover)
    remap = _pass(NEW)

    def _batch(
        store: PartitionStore, work: list[Any], remap: RemapPass | None
    ) -> tuple[BatchView, Counter[str]]:
        return _one_batch(store, work, remap, due=due and remap is not None)

    a = PartitionStore(tmp_path / "a")
    b = a if where == "local" else PartitionStore(tmp_path / "b")
    # Before the rollout (or before the pass looked): the donor, and in row-older the create.
    _batch(a, [old], None)
    if case == "row-older":
        _batch(b, [create], None)
        sender, counts = _batch(a, [delete], remap)
        assert counts["remapped"] == 0  # the donor is a marker now; nothing here to re-map
        view, counts = _batch(b, list(sender.offers), remap)
    elif where == "local":
        view, counts = _batch(a, [delete, create], remap)
    else:
        sender, _ = _batch(a, [delete], remap)
        offer = sender.offers[0]
        if where == "offer-then-create":
            _batch(b, [offer], remap)  # pending under its reserved key: nothing to re-map
            view, counts = _batch(b, [create], remap)
        else:
            _, counts = _batch(b, [create], remap)
            assert counts["remapped"] == 0  # incomplete: waiting for the offer
            view, counts = _batch(b, [offer], remap)
    assert counts["remapped"] == 1
    raw = b.get(state_key("Family", "FAM-22"))
    assert raw is not None
    row = decode_row("Family", raw)
    assert row.complete
    assert row.mapping_version == remap.versions["Family"]
    assert row.values["Status"] == "SUSPENDED"
    assert row.values["FamilyName"].startswith("Okafor-Lindqvist")
    assert row.values["PostalCode"] is not None  # a column only the new mapping reads
    assert view.encoded[state_key("Family", "FAM-22")] == raw  # in the batch's own transaction


def test_a_mixed_row_without_complete_source_columns_stays_mixed_and_is_counted(tmp_path: Path) -> None:
    """The donor kept no source columns (written before rows kept them): the carry fills the
    values but leaves a hole in the new row's columns, so the pass cannot map it again. It
    stays labelled mixed (the snapshot holds its entity, saying why), counted ``no_source``."""
    old, delete, create = family_update(CARRIED, MAPPING, NEW)
    a = PartitionStore(tmp_path / "a")
    _one_batch(a, [replace(old, source=None)], None)
    _, counts = _one_batch(a, [delete, create], _pass(NEW))
    assert counts["no_source"] == 1
    assert counts["remapped"] == 0
    raw = a.get(state_key("Family", "FAM-22"))
    assert raw is not None
    assert row_mapping_version(raw) == MIXED_MAPPING
    assert decode_row("Family", raw).complete


def test_a_row_the_batch_wrote_and_its_sweep_refused_is_dead_lettered_once(tmp_path: Path) -> None:
    """The sweep and the written-rows step of one step meet the same row (the batch wrote it
    under the older version, and the sweep reaches it): one dead letter, counted once."""
    store = _store(tmp_path, MAPPING, _events(40))
    pending = [k for k, v in _rows(store).items() if stored_values(v)["Status"] == "PENDING"]
    assert pending
    view = BatchView(store, Emitted(), 0)
    for key in pending:  # written again by this batch, still under the older version
        entity, entity_id = key.decode().split("/", 1)
        row = view.get(entity, entity_id)
        assert row is not None
        view.put(entity, entity_id, row)
    producer = Producer()
    counts = _pass(FAILING).step(0, view, producer)  # type: ignore[arg-type]
    assert Counter(key for _, _, key, _ in producer.sent) == dict.fromkeys(pending, 1)
    assert counts["failed"] == len(pending)


@pytest.mark.parametrize("adopted", ["current", "older"])
def test_a_carry_from_a_row_written_before_versions_is_read_as_the_registrys_adopted_version(
    tmp_path: Path, adopted: str
) -> None:
    """The donor was written before rows carried a version, and before they kept source columns
    (an upgraded deployment): the carry labels the new row None, which the pass reads as the
    version the registry adopted for such rows. ``current``: no mapping change since, the row is
    whole under the current mapping: left alone, not held. ``older``: a mapping changed since, so
    the row really mixes two: the pass tries it (no source for the donor's columns: counted
    ``no_source``) and its label stays the older one, which the snapshot holds."""
    old, delete, create = family_update(CARRIED, NEW, NEW)
    remap = _pass(NEW)
    remap.unversioned = {"Family": remap.versions["Family"] if adopted == "current" else "0" * 16}
    a = PartitionStore(tmp_path / "a")
    _one_batch(a, [replace(old, source=None, mapping_version=None)], None)
    _, counts = _one_batch(a, [delete, create], remap)
    raw = a.get(state_key("Family", "FAM-22"))
    assert raw is not None
    assert row_mapping_version(raw) is None
    assert decode_row("Family", raw).complete
    assert counts["no_source"] == (0 if adopted == "current" else 1)
    assert counts["remapped"] == counts["failed"] == 0
