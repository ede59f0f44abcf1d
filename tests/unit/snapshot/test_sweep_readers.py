"""Both cut readers sweep the same rows (``connector.state.sweep``), byte for byte.

Rows of every generation (snapshot reads ``2 * L``, changes ``2 * G + 1`` with positions below
and above the completed snapshot's LSN, rows written before generations), a completion of a
source that feeds some entities, and positions caught up or not: the compiled reader must
answer as the reference on counts, swept counts, incomplete rows, documents, presence, the
plan and the CSV bytes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.model import ENTITY_NAMES, samples
from connector.snapshot.plan import make_plan
from connector.source.version import NO_LAST_COMMIT, Version, predates
from connector.state.codec import encode_row, state_key
from connector.state.resolve import StateRow
from connector.state.sweep import Completion, completion_key, encode_completion, encode_position, position_key
from tests.integration.snapshot_helpers import PREFIXES
from tests.unit.snapshot.test_compiled_cut import Msg, _csv, _load

pytestmark = pytest.mark.fastpath

GENERATION = 500
TOPIC = "pg.s.t"
VERSIONS = st.sampled_from(
    [
        Version(0, 0, 300, 0, 0),  # a read from before generations existed
        Version(1, 200, 210, 0, 1),  # a change from before generations existed
        Version(2 * 300, 300, 300, 0, 2),  # the older snapshot's read
        Version(2 * 300 + 1, 400, 410, 0, 3),  # changed after it, before the gap
        Version(2 * 300 + 1, 510, 520, 0, 4),  # changed after the re-snapshot, no read here
        Version(2 * 300 + 1, 480, 480, NO_LAST_COMMIT, 7),  # the first transaction after it, unplaced
        Version(2 * GENERATION, GENERATION, GENERATION, 0, 5),  # read by the re-snapshot
        Version(2 * GENERATION + 1, 600, 610, 0, 6),  # changed after it
    ]
)


@st.composite
def rows(draw: st.DrawFn) -> tuple[str, str, bytes]:
    entity = draw(st.sampled_from(ENTITY_NAMES))
    entity_id = f"{PREFIXES[entity]}-{draw(st.integers(0, 6))}"
    version = draw(VERSIONS)
    shape = draw(st.sampled_from(["live", "live", "deleted", "incomplete"]))
    if shape == "deleted":
        return (
            entity,
            entity_id,
            encode_row(StateRow(version, True, {}, delete_floor=version), deleted_at_ms=5),
        )
    values = {**samples.sample(entity), "EntityId": entity_id}
    missing = frozenset({"UpdatedAt"}) if shape == "incomplete" else frozenset()
    if missing:
        del values["UpdatedAt"]
    return entity, entity_id, encode_row(StateRow(version, False, values, missing))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.lists(st.tuples(st.integers(0, 1), rows()), max_size=50),
    fed=st.sets(st.sampled_from(ENTITY_NAMES)),
    caught_up=st.booleans(),
)
def test_both_readers_sweep_the_same_rows(
    data: list[tuple[int, tuple[str, str, bytes]]], fed: set[str], caught_up: bool, tmp_path: Path
) -> None:
    offsets = {0: 0, 1: 0}
    messages = []
    for partition, (entity, entity_id, row) in data:
        messages.append(Msg(partition, offsets[partition], state_key(entity, entity_id), row))
        offsets[partition] += 1
    done = Completion("pg", GENERATION, {TOPIC: {0: 40, 1: 40}}, tuple(sorted(fed)))
    reserved = [
        Msg(0, offsets[0], completion_key("pg", 0), encode_completion(done)),
        Msg(0, offsets[0] + 1, position_key(TOPIC, 0), encode_position(40 if caught_up else 39)),
        Msg(1, offsets[1], position_key(TOPIC, 1), encode_position(41)),
    ]
    offsets[0] += 2
    offsets[1] += 1
    batches = [messages[i : i + 7] for i in range(0, len(messages), 7)] + [reserved]
    ref, fast = _load(batches, dict(offsets), tmp_path)
    with ref, fast:
        assert fast.sweep == ref.sweep
        assert fast.sweep_json() == ref.sweep_json()
        assert set(ref.sweep.generations) == (fed if caught_up else set())
        for entity in ENTITY_NAMES:
            assert fast.count(entity) == ref.count(entity)
            assert fast.swept(entity) == ref.swept(entity)
            assert fast.incomplete(entity) == ref.incomplete(entity)
            assert list(fast.documents(entity)) == list(ref.documents(entity))
            for i in range(7):
                entity_id = f"{PREFIXES[entity]}-{i}"
                assert (entity_id in fast.present(entity)) == (entity_id in ref.present(entity))
        plan = make_plan(ref)
        assert make_plan(fast) == plan
        for entity_plan in plan.entities:
            held = entity_plan.held_out
            assert _csv(fast, entity_plan.entity, held, True) == _csv(ref, entity_plan.entity, held, False)


def test_a_swept_row_is_neither_counted_nor_delivered_and_a_later_one_is(tmp_path: Path) -> None:
    def claim(entity_id: str, version: Version) -> Msg:
        values = {**samples.sample("Claim"), "EntityId": entity_id}
        return Msg(
            0, int(entity_id[-1]), state_key("Claim", entity_id), encode_row(StateRow(version, False, values))
        )

    gone = Version(2 * 300 + 1, 400, 410, 0, 0)  # changed before the gap, not read again
    kept = Version(2 * GENERATION, GENERATION, GENERATION, 0, 1)
    after = Version(2 * 300 + 1, 510, 520, 0, 2)  # streamed after, into a partition with no read
    assert predates(gone, GENERATION)
    assert not predates(kept, GENERATION)
    assert not predates(after, GENERATION)
    done = Completion("pg", GENERATION, {TOPIC: {0: 3}}, ("Claim",))
    batch = [
        claim("CLM-0", gone),
        claim("CLM-1", kept),
        claim("CLM-2", after),
        Msg(0, 3, completion_key("pg", 0), encode_completion(done)),
        Msg(0, 4, position_key(TOPIC, 0), encode_position(3)),
    ]
    ref, fast = _load([batch], {0: 5}, tmp_path)
    with ref, fast:
        for reader in (ref, fast):
            assert reader.count("Claim") == 2
            assert reader.swept("Claim") == 1
            assert [entity_id for entity_id, _ in reader.documents("Claim")] == ["CLM-1", "CLM-2"]
            assert "CLM-0" not in reader.present("Claim")
            assert reader.sweep_json() == {
                "generations": {"Claim": GENERATION},
                "waiting": {},
                "swept": {"Claim": 1},
            }
