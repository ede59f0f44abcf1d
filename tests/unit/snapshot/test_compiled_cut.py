"""The compiled reader (``CompiledStateReader``) answers what the reference reader answers.

Both readers take the same consumed batches (value objects with the ``Message`` methods they
call, no broker: the broker path is tests/integration/test_snapshot_compiled.py) and must agree
on every entity's count, incomplete rows, documents and presence, on the plan (orphans with
their cascade, under both policies) and on the CSV bytes, or the same ``EncodeError``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.mapping.source_columns import SourceColumns, encode_source
from connector.model import ENTITY_NAMES, REFERENCES, raw_schema, samples
from connector.sinks.compiled_csv import csv_columns
from connector.sinks.exceptions import EncodeError
from connector.sinks.formats import CSV
from connector.snapshot.checks import OrphanPolicy, orphans
from connector.snapshot.compiled_cut import CompiledStateReader
from connector.snapshot.cut import Cut, StateReader
from connector.snapshot.digest import digest_entity
from connector.snapshot.files import compiled_csv
from connector.snapshot.plan import make_plan
from connector.source.version import Version
from connector.state.codec import encode_row, state_key
from connector.state.resolve import StateRow
from tests.integration.snapshot_helpers import PREFIXES
from tests.unit.sinks.test_stored import _kinds

pytestmark = pytest.mark.fastpath

PARENTS = {ref.field: ref.parent for refs in REFERENCES.values() for ref in refs}


class Msg:
    """What the readers call on a consumed ``confluent_kafka.Message``."""

    __slots__ = ("_key", "_offset", "_partition", "_value")

    def __init__(self, partition: int, offset: int, key: bytes | None, value: bytes | None) -> None:
        self._partition, self._offset, self._key, self._value = partition, offset, key, value

    def error(self) -> None:
        return None

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value


def _optional(entity: str) -> set[str]:
    return {f["name"] for f in raw_schema(entity)["fields"] if isinstance(f["type"], list)}


ids = st.one_of(
    st.integers(0, 5).map(str),
    st.sampled_from(["é", "a,b", 'q"t', "=1", "", "\u2603"]),
)
ODD = {  # values the file takes, in other shapes than the state's usual ones
    "string": st.one_of(
        st.text(max_size=6),
        st.sampled_from(["=SUM(A1)", "-3", "+1", "@x", "\tx", "\rx", "a,b", 'x"y', "a\r\nb", "'q"]),
    ),
    "date": st.sampled_from(["2024-02-29", "1999-12-31"]),
    "timestamp-millis": st.sampled_from(
        [
            "2024-01-01T12:00:00.123456+00:00",
            "2024-01-01T12:00:00+00:00",
            "2024-01-01T12:00:00.123+00:00",
            "2024-01-01T12:00:00+05:30",
        ]
    ),
    "decimal": st.sampled_from(["12.50", "12.5", "-0.00", "0.00", "1E+2", "-7.25", "0"]),
    "boolean": st.booleans(),
}
BAD = {  # values the file refuses (EncodeError, the same from both paths)
    "string": st.sampled_from([7, None]),
    "date": st.sampled_from(["2024-2-9", "29/02/2024"]),
    "timestamp-millis": st.sampled_from(["2024-01-01T12:00:00", "soon"]),
    "decimal": st.sampled_from(["12.505", "x.yz"]),
    "boolean": st.just(1),
}


@st.composite
def records(draw: st.DrawFn) -> tuple[str, str, bytes]:
    """(entity, EntityId, encoded state row): live, deleted or incomplete, odd values at times,
    the values' keys in schema order or shuffled (a row merged from a partial update)."""
    entity = draw(st.sampled_from(ENTITY_NAMES))
    entity_id = f"{PREFIXES[entity]}-{draw(ids)}"
    version = Version(1, draw(st.integers(0, 3)), 0, 0, draw(st.integers(0, 2)))
    shape = draw(st.sampled_from(["live", "live", "live", "deleted", "incomplete", "older-filled"]))
    if shape == "deleted":
        return (
            entity,
            entity_id,
            encode_row(StateRow(version, True, {}, delete_floor=version), deleted_at_ms=5),
        )
    values: dict[str, Any] = {**samples.sample(entity), "EntityId": entity_id}
    for ref in REFERENCES[entity]:
        values[ref.field] = draw(
            st.one_of(ids.map(lambda i, p=ref.parent: f"{PREFIXES[p]}-{i}"), st.sampled_from([None, 7]))
        )
    encoded = orjson.loads(encode_row(StateRow(version, False, values)))["r"]
    for name, kind in _kinds(entity).items():
        if kind in ODD and name not in PARENTS and draw(st.integers(0, 3)) == 0:
            encoded[name] = draw(st.one_of(ODD[kind], st.none()) if name in _optional(entity) else ODD[kind])
        if kind in BAD and name not in PARENTS and draw(st.integers(0, 150)) == 0:
            encoded[name] = draw(BAD[kind])
    if draw(st.integers(0, 4)) == 0:
        encoded = dict(draw(st.permutations(list(encoded.items()))))
    if shape == "incomplete":
        del encoded["UpdatedAt"]
        doc = {"v": list(version), "r": encoded, "m": ["UpdatedAt"]}
    elif shape == "older-filled":
        doc = {"v": list(version), "r": encoded, "fv": {"UpdatedAt": list(version)}}
    else:
        doc = {"v": list(version), "r": encoded}
    if draw(st.booleans()):  # the row keeps its source columns: the spill leaves them out
        columns = {"d": 1, "m": ['x"\\'], "mv": "fake", "src": '","src":"', "r": {"EntityId": "no"}}
        doc["src"] = encode_source(SourceColumns("public.t", {**columns, "n": draw(st.text(max_size=5))}))
    if draw(st.booleans()):
        doc["mv"] = "abcdefabcdef"
    return entity, entity_id, orjson.dumps(doc)


def _messages(rows: list[tuple[int, tuple[str, str, bytes]]]) -> tuple[list[list[Msg]], dict[int, int]]:
    offsets = {0: 0, 1: 0}
    out = []
    for partition, (entity, entity_id, row) in rows:
        out.append(Msg(partition, offsets[partition], state_key(entity, entity_id), row))
        offsets[partition] += 1
    batches = [out[i : i + 7] for i in range(0, len(out), 7)]
    return batches, offsets


def _load(
    batches: list[list[Msg]], ends: dict[int, int], work: Path
) -> tuple[StateReader, CompiledStateReader]:
    cut = Cut("state", ends)
    ref = StateReader({}, cut, work)
    fast = CompiledStateReader({}, cut, work, budget=512)  # a run file every few records
    for batch in batches:
        ref._absorb(batch, dict(ends))
        ref._flush()
        fast.spill.absorb(batch, dict(ends))
    ref._survey()
    fast.finish()
    return ref, fast


def _csv(reader: Any, entity: str, held_out: frozenset[str], compiled: bool) -> bytes | str:
    try:
        if compiled:
            return b"".join(compiled_csv(reader, entity, held_out))
        docs = (values for entity_id, values in reader.documents(entity) if entity_id not in held_out)
        return b"".join(CSV.writer(entity, stored=True).write_rows(docs))
    except EncodeError as exc:
        return str(exc)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(st.tuples(st.integers(0, 1), records()), max_size=60),
    cut_back=st.tuples(st.integers(0, 3), st.integers(0, 3)),
)
def test_the_compiled_reader_answers_as_the_reference(
    rows: list[tuple[int, tuple[str, str, bytes]]], cut_back: tuple[int, int], tmp_path: Path
) -> None:
    batches, offsets = _messages(rows)
    ends = {p: max(0, offsets[p] - back) for p, back in zip((0, 1), cut_back, strict=True)}
    ref, fast = _load(batches, ends, tmp_path)
    with ref, fast:
        assert fast.records_read == ref.records_read
        for entity in ENTITY_NAMES:
            assert fast.count(entity) == ref.count(entity)
            assert fast.incomplete(entity) == ref.incomplete(entity)
            assert fast.mapping_versions(entity) == ref.mapping_versions(entity)
            assert list(fast.documents(entity)) == list(ref.documents(entity))
            for i in ["0", "1", "5", "é", "a,b", ""]:
                entity_id = f"{PREFIXES[entity]}-{i}"
                assert (entity_id in fast.present(entity)) == (entity_id in ref.present(entity))
        fields = {e: [ref.field for ref in REFERENCES[e]] for e in ENTITY_NAMES if REFERENCES[e]}
        every = orphans(
            {e: ref.references(e, f) for e, f in fields.items()}, {e: ref.present(e) for e in ENTITY_NAMES}
        )
        for result in every.entities:
            if result.entity in fields:
                candidates = {row[0] for row in fast.candidates(result.entity, fields[result.entity])}
                assert {orphan.entity_id for orphan in result.orphans} <= candidates
        for policy in OrphanPolicy:
            plan = make_plan(fast, policy=policy)
            assert plan == make_plan(ref, policy=policy)
        for entity_plan in make_plan(ref).entities:
            held = entity_plan.held_out
            assert _csv(fast, entity_plan.entity, held, True) == _csv(ref, entity_plan.entity, held, False)
            paths = tmp_path / "fast.digest", tmp_path / "ref.digest"
            for reader, path in zip((fast, ref), paths, strict=True):
                digest_entity(reader, entity_plan.entity, held, path)
            assert paths[0].read_bytes() == paths[1].read_bytes()


def test_a_key_seen_in_many_runs_keeps_its_highest_version_and_the_later_of_a_tie(tmp_path: Path) -> None:
    def row(status: str, major: int) -> bytes:
        values = {**samples.sample("Claim"), "EntityId": "CLM-1", "Status": status}
        return encode_row(StateRow(Version(1, major, 0, 0, 0), False, values))

    sequence = [("PENDING", 1), ("PAID", 4), ("DENIED", 2), ("APPROVED", 4), ("PENDING", 3)]
    batches = [
        [Msg(i % 2, i // 2, state_key("Claim", "CLM-1"), row(s, m))] for i, (s, m) in enumerate(sequence)
    ]
    ref, fast = _load(batches, {0: 3, 1: 2}, tmp_path)
    with ref, fast:
        assert [values["Status"] for _, values in fast.documents("Claim")] == ["APPROVED"]
        assert list(fast.documents("Claim")) == list(ref.documents("Claim"))


@pytest.mark.parametrize(
    ("field", "raw", "cell"),
    [
        ("BilledAmount", b'"-0.00"', b"0.00"),  # negative zero is written as zero
        ("BilledAmount", b'"1E+2"', b"100.00"),
        ("BilledAmount", b'"12.5"', b"12.50"),
        ("UpdatedAt", b'"2024-01-01T12:00:00+05:30"', b"2024-01-01T06:30:00.000Z"),
        ("DenialReasonCode", b'"=HYPERLINK()"', b"'=HYPERLINK()"),
        ("DenialReasonCode", b'"a\\r\\nb"', b'"a\r\nb"'),
        ("DenialReasonCode", b'"\\u0000"', b"\x00"),
    ],
)
def test_values_the_extension_declines_are_written_by_python_in_place(
    field: str, raw: bytes, cell: bytes, tmp_path: Path
) -> None:
    def row(entity_id: str, value: bytes | None) -> bytes:
        values = {**samples.sample("Claim"), "EntityId": entity_id, "DenialReasonCode": "X"}
        doc = encode_row(StateRow(Version(1, 1, 0, 0, 0), False, values))
        if value is None:
            return doc
        start = doc.index(b'"' + field.encode() + b'":') + len(field) + 3
        end = start + len(orjson.dumps(orjson.loads(doc)["r"][field]))
        return doc[:start] + value + doc[end:]

    rows = [row("CLM-1", None), row("CLM-2", raw), row("CLM-3", None)]
    batches = [[Msg(0, i, state_key("Claim", f"CLM-{i + 1}"), r) for i, r in enumerate(rows)]]
    ref, fast = _load(batches, {0: 3}, tmp_path)
    with ref, fast:
        compiled = _csv(fast, "Claim", frozenset(), True)
        assert compiled == _csv(ref, "Claim", frozenset(), False)
        assert isinstance(compiled, bytes)
        assert cell in compiled


def test_a_bad_value_is_named_with_its_record_number_as_the_python_writer_names_it(tmp_path: Path) -> None:
    values = {**samples.sample("Claim"), "EntityId": "CLM-2"}
    bad = orjson.loads(encode_row(StateRow(Version(1, 1, 0, 0, 0), False, values)))
    bad["r"]["BilledAmount"] = "12.505"
    good = encode_row(StateRow(Version(1, 1, 0, 0, 0), False, {**values, "EntityId": "CLM-1"}))
    batches = [
        [
            Msg(0, 0, state_key("Claim", "CLM-1"), good),
            Msg(0, 1, state_key("Claim", "CLM-2"), orjson.dumps(bad)),
        ]
    ]
    ref, fast = _load(batches, {0: 2}, tmp_path)
    with ref, fast:
        message = _csv(fast, "Claim", frozenset(), True)
        assert message == _csv(ref, "Claim", frozenset(), False)
        assert message == "Claim.BilledAmount in record 2 of the file has more than 2 decimal places"


def test_timestamps_in_the_state_shape_are_written_by_the_extension(tmp_path: Path) -> None:
    """The common row is not declined (else the speed is lost, silently)."""
    values = {
        **samples.sample("Care"),
        "UpdatedAt": dt.datetime(2024, 5, 1, 8, 30, 15, 123456, tzinfo=dt.UTC),
    }
    rows = [
        encode_row(StateRow(Version(1, 1, 0, 0, 0), False, {**values, "EntityId": f"CAR-{i}"}))
        for i in range(3)
    ]
    batches = [[Msg(0, i, state_key("Care", f"CAR-{i}"), r) for i, r in enumerate(rows)]]
    ref, fast = _load(batches, {0: 3}, tmp_path)
    with ref, fast:
        parts = list(fast.spill.csv("Care", csv_columns("Care"), set(), 1 << 20))
    assert len(parts) == 1
    assert isinstance(parts[0], bytes)
    assert parts[0].count(b"2024-05-01T08:30:15.123Z") == 3
