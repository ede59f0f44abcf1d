"""The synthetic CDC stream: deterministic, consistent, and its expected state is the truth.

The strongest check is ``test_expected_state_equals_the_connectors_offline_replay``: the
generator computes the final state from its own model of the source rows, the connector's
offline path (decode -> map -> merge) computes it from the events, and the two must agree.
The scenario test makes sure that agreement is not cheap: the stream really holds the
duplicates, swaps, deletes, re-creates, TOAST placeholders and long transactions, and a
consumer that applies events in delivery order ends somewhere else.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from connector.devtools.synthetic import (
    DEMO_SCALE,
    MALFORMED_KINDS,
    TABLES,
    SyntheticEvent,
    SyntheticStream,
    generate,
    main,
)
from connector.errors import BadInputError
from connector.ingest.replay import ReplayResult, replay
from connector.mapping import Mapper, load_mapping
from connector.model import ENTITY_NAMES, REFERENCES, validate
from connector.source import Position, make_decoder

MAPPING = Path(__file__).parents[3] / "examples" / "mapping.yaml"
SCALE = 300
FILE_THRESHOLD = 5000


@pytest.fixture(scope="module")
def stream() -> SyntheticStream:
    return generate(SCALE)


@pytest.fixture(scope="module")
def events(stream: SyntheticStream) -> list[SyntheticEvent]:
    return list(stream)


@pytest.fixture(scope="module")
def expected(stream: SyntheticStream) -> dict[str, dict[str, dict[str, Any]]]:
    return stream.expected_state()


@pytest.fixture(scope="module")
def replayed(stream: SyntheticStream) -> ReplayResult:
    return replay(load_mapping(MAPPING), stream.messages())


_MAPPER = Mapper(load_mapping(MAPPING))
_DECODER = make_decoder("debezium-json")


def _parsed(event: SyntheticEvent) -> dict[str, Any] | None:
    """The envelope of a good change event; None for tombstones and the malformed events
    (those the connector's decoder or mapper rejects)."""
    if event.value is None:
        return None
    try:
        decoded = _DECODER.decode(event.key, event.value, None, Position(event.topic, 0, 0))
        assert decoded is not None
        _MAPPER.map(decoded)
    except BadInputError:
        return None
    doc: dict[str, Any] = orjson.loads(event.value)
    return doc


def _version(doc: dict[str, Any]) -> tuple[int, int, int]:
    major, minor = json.loads(doc["source"]["sequence"])
    return (0 if doc["op"] == "r" else 1, int(major or 0), int(minor))


def test_same_seed_gives_the_same_stream_and_state() -> None:
    one, two, other = generate(60, seed=5), generate(60, seed=5), generate(60, seed=6)
    assert list(one) == list(two)
    assert one.expected_state() == two.expected_state()
    assert list(one) != list(other)
    assert one.expected_state() != other.expected_state()


def test_events_are_debezium_postgres_change_events(stream: SyntheticStream, events: list[Any]) -> None:
    pk = {
        "family": "family_id",
        "provider": "provider_id",
        "family_member": "member_id",
        "care_episode": "episode_id",
        "claim": "claim_id",
        "payment": "payment_id",
    }
    for event in events:
        assert event.topic in stream.topics
        table = event.topic.removeprefix(stream.topic_prefix)
        key = orjson.loads(event.key)
        assert list(key) == [pk[table]]
        doc = _parsed(event)
        if doc is None:
            continue
        source = doc["source"]
        assert (source["connector"], source["schema"], source["table"]) == ("postgresql", "public", table)
        assert isinstance(source["lsn"], int)
        assert isinstance(source["txId"], int)
        assert len(json.loads(source["sequence"])) == 2
        if doc["op"] != "r":
            assert doc["transaction"]["id"].startswith(f"{source['txId']}:")


def test_expected_state_equals_the_connectors_offline_replay(
    stream: SyntheticStream, expected: dict[str, dict[str, Any]], replayed: ReplayResult
) -> None:
    got: dict[str, dict[str, Any]] = {entity: {} for entity in ENTITY_NAMES}
    for entity, entity_id, values in replayed.live:
        got[entity][entity_id] = values
    for entity in ENTITY_NAMES:
        assert got[entity].keys() == expected[entity].keys(), entity
        differing = [eid for eid, values in expected[entity].items() if got[entity][eid] != values]
        assert not differing, (entity, differing[:5])
    assert replayed.stale > 0
    assert replayed.tombstones > 0
    assert sum(map(len, expected.values())) > 4000


def test_malformed_events_and_only_they_are_dead_lettered_with_a_reason(
    stream: SyntheticStream, replayed: ReplayResult
) -> None:
    reasons = [(d.position.topic, d.reason) for d in replayed.dead_letters]
    assert reasons == [(stream.topic_prefix + "family", r) for r in stream.dead_letter_reasons()]
    assert len(reasons) == stream.expected_dead_letters == len(MALFORMED_KINDS)
    assert set(stream.dead_letter_reasons()) == set(MALFORMED_KINDS)


@pytest.mark.parametrize("malformed", [0, 8])
def test_the_number_of_malformed_events_is_a_parameter(malformed: int) -> None:
    small = generate(30, seed=3, malformed=malformed)
    result = replay(load_mapping(MAPPING), small.messages())
    assert [d.reason for d in result.dead_letters] == list(small.dead_letter_reasons())
    assert small.expected_dead_letters == malformed
    assert small.dead_letter_reasons()[6:] == MALFORMED_KINDS[: max(0, malformed - 6)]


def test_every_reference_points_to_a_live_parent(expected: dict[str, dict[str, Any]]) -> None:
    """No orphans are generated on purpose: deletes cascade and churned providers are unused."""
    checked = 0
    for entity in ENTITY_NAMES:
        for record in expected[entity].values():
            for ref in REFERENCES[entity]:
                assert record[ref.field] in expected[ref.parent], (entity, record["EntityId"], ref.field)
                checked += 1
    assert checked > 5000


def test_expected_records_conform_to_their_schemas(expected: dict[str, dict[str, Any]]) -> None:
    for entity, records in expected.items():
        assert records, entity
        for entity_id, record in records.items():
            assert record["EntityId"] == entity_id
            validate(entity, record)


def test_the_stream_holds_every_scenario(events: list[SyntheticEvent]) -> None:
    seen: Counter[str] = Counter()
    rows: dict[tuple[str, bytes], list[dict[str, Any]]] = {}
    for event in events:
        doc = _parsed(event)
        if doc is None:
            seen["tombstone" if event.value is None else "malformed"] += 1
            continue
        seen[f"op_{doc['op']}"] += 1
        seen["toast"] += b"__debezium_unavailable_value" in event.value  # type: ignore[operator]
        seen["full_before"] += doc["op"] == "d" and len(doc["before"]) > 1
        rows.setdefault((event.topic, event.key), []).append(doc)
    seen["duplicate"] = sum(n - 1 for n in Counter(e for e in events if e.value is not None).values())
    for docs in rows.values():
        delivered = [_version(d) for d in docs]
        by_version = sorted(docs, key=_version)
        seen["older_after_newer"] += any(
            a[0] == 1 and a < max(delivered[:i]) for i, a in enumerate(delivered) if i
        )
        # A read of the initial snapshot delivered again after the row's streamed changes.
        seen["stale_reread"] += any(
            v[0] == 0 and any(w[0] == 1 for w in delivered[:i]) for i, v in enumerate(delivered)
        )
        seen["recreate"] += any(a["op"] == "d" and b["op"] == "c" for a, b in itertools.pairwise(by_version))
        lsns = [d["source"]["lsn"] for d in by_version if d["op"] != "r"]
        seen["lower_lsn_commits_later"] += any(b < a for a, b in itertools.pairwise(lsns))
    for scenario in (
        "op_r",
        "op_c",
        "op_u",
        "op_d",
        "tombstone",
        "malformed",
        "toast",
        "full_before",
        "duplicate",
        "older_after_newer",
        "stale_reread",
        "recreate",
        "lower_lsn_commits_later",
    ):
        assert seen[scenario] > 0, (scenario, seen)


def test_a_consumer_that_applies_events_in_delivery_order_gets_it_wrong(
    stream: SyntheticStream, expected: dict[str, dict[str, Any]]
) -> None:
    """The connector's decoding and mapping, but last-delivered-wins instead of versions."""
    mapper, decoder = _MAPPER, make_decoder("debezium-json")
    naive: dict[tuple[str, str], dict[str, Any]] = {}
    for message in stream.messages():
        try:
            event = decoder.decode(message.key, message.value, None, message.position)
            change = None if event is None else mapper.map(event)
        except BadInputError:
            continue
        if change is None:
            continue
        if change.deleted:
            naive.pop((change.entity, change.entity_id), None)
        else:
            naive[(change.entity, change.entity_id)] = {
                **naive.get((change.entity, change.entity_id), {}),
                **change.values,
            }
    flat = {(entity, eid): record for entity, records in expected.items() for eid, record in records.items()}
    assert naive != flat


def test_at_the_demo_scale_only_claims_go_by_file() -> None:
    """The demo scale: Claim crosses CareCloud's 5000-record file threshold, the rest go by API."""
    counts = generate(DEMO_SCALE).expected_counts()
    assert counts == {
        "Family": 981,
        "Provider": 47,
        "FamilyMember": 2494,
        "Care": 3335,
        "Claim": 6760,
        "EOP": 2622,
    }
    assert [entity for entity, n in counts.items() if n > FILE_THRESHOLD] == ["Claim"]


def test_events_stream_without_materialising_the_whole_run() -> None:
    huge = generate(10_000_000)
    first = next(iter(huge))
    assert first.topic.endswith(".provider")


def test_expected_cli_writes_the_state_as_the_json_sink_encodes_it(tmp_path: Path) -> None:
    out = tmp_path / "expected.json"
    assert main(["expected", "--scale", "40", "--seed", "2", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    state = generate(40, seed=2).expected_state()
    assert doc["dead_letters"] == len(MALFORMED_KINDS)
    assert doc["counts"] == {entity: len(records) for entity, records in state.items()}
    assert doc["topics"] == [f"benefits.public.{table}" for table in TABLES]
    claim_id, claim = next(iter(state["Claim"].items()))
    written = doc["entities"]["Claim"][claim_id]
    assert written["BilledAmount"] == f"{claim['BilledAmount']:.2f}"
    assert written["SubmittedDate"] == claim["SubmittedDate"].isoformat()
    assert written["UpdatedAt"].endswith("Z")
    assert len(written["UpdatedAt"]) == 24


def test_stats_cli_prints_counts_and_speed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", "--scale", "20"]) == 0
    out = capsys.readouterr().out
    assert "events/s" in out
    assert "Claim" in out


def test_scale_and_malformed_are_checked() -> None:
    with pytest.raises(ValueError, match="scale"):
        generate(0)
    with pytest.raises(ValueError, match="malformed"):
        generate(10, malformed=-1)


def test_messages_number_offsets_per_topic(stream: SyntheticStream) -> None:
    positions = [m.position for m in stream.messages()]
    for topic in stream.topics:
        offsets = [p.offset for p in positions if p.topic == topic]
        assert offsets == list(range(len(offsets)))
    assert all(p.partition == 0 for p in positions)
    assert isinstance(positions[0], Position)
