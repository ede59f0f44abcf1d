"""The compiled fast path maps exactly as the Python path does, or declines.

The property behind every test here: for any message, the fast path either returns None
(the Python path then decodes and maps it) or the same entity change the Python path makes,
down to the state bytes it leads to. Any input the Python path refuses (a dead letter) must
be declined, never mapped. The messages are the synthetic stream of every example table and
mutations of them aimed at the places where two implementations drift: numbers beyond 64
bits, floats for ints, control characters, base64 edge cases, date and timestamp bounds, the
Debezium source block, keys that disagree with the row, placeholders.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector._fastpath import fastpath_available
from connector.devtools.debezium_schema import LOGICAL, column_schemas, wrap, wrap_key
from connector.devtools.synthetic import generate
from connector.errors import BadInputError
from connector.ingest.batch import as_change
from connector.mapping import EntityChange, Mapper, load_mapping
from connector.mapping.convert import FIRST_DAY, LAST_DAY
from connector.mapping.fastpath import FastPath, fastpath_plan
from connector.source import Position, make_decoder
from connector.source.version import with_generation
from connector.state.codec import encode_row, state_key
from connector.state.resolve import merge

pytestmark = pytest.mark.fastpath

EXAMPLE = Path(__file__).parents[3] / "examples" / "mapping.yaml"
PLACEHOLDER = "__debezium_unavailable_value"


class Paths:
    """Both paths for every topic of one mapping."""

    def __init__(self, mapper: Mapper) -> None:
        self.mapper = mapper
        self.fast = {topic: FastPath(mapper, topic) for topic in mapper.spec.topics}
        self.decoders = {topic: make_decoder("debezium-json") for topic in mapper.spec.topics}

    def reference(
        self, topic: str, key: bytes, value: bytes, offset: int, generation: int = 0
    ) -> EntityChange | str | None:
        """The Python path: the change, the dead letter's reason, or None for a tombstone;
        stamped with the partition's ``generation`` as the ingest stamps it."""
        try:
            event = self.decoders[topic].decode(key, value, None, Position(topic, 0, offset))
            if event is None:
                return None
            event.version = with_generation(event.version, generation)
            return self.mapper.map(event)
        except BadInputError as exc:
            return exc.reason

    def check(self, topic: str, key: bytes, value: bytes, offset: int = 41, generation: int = 0) -> bool:
        """Assert the property for one message; True when the fast path took it."""
        fast = self.fast[topic].map(key, value, None, Position(topic, 0, offset), generation)
        if fast is None:
            return False
        ref = self.reference(topic, key, value, offset, generation)
        assert isinstance(ref, EntityChange), f"fast path mapped a message the Python path gives {ref!r}"
        assert ref.missing == frozenset()
        assert (fast.entity, fast.entity_id, fast.deleted, fast.version) == (
            ref.entity,
            ref.entity_id,
            ref.deleted,
            tuple(ref.version),
        )
        assert fast.key == state_key(ref.entity, ref.entity_id)
        ref_row = merge(None, ref)
        assert ref_row is not None
        if ref.deleted:
            assert fast.row is None
        else:  # the encoded row, byte for byte, and the change it stands for
            assert fast.mapping_version == ref.mapping_version is not None
            assert fast.row == encode_row(ref_row)  # "mv" included, written by the extension
        via_python = merge(None, as_change(fast))
        assert via_python is not None
        assert encode_row(via_python) == encode_row(ref_row)
        return True


@pytest.fixture(scope="module", params=[False, True], ids=["values", "with-source-columns"])
def paths(request: pytest.FixtureRequest) -> Paths:
    """Both paths, with rows keeping their source columns (``"src"``) and without."""
    return Paths(Mapper(load_mapping(EXAMPLE), source_columns=request.param))


@pytest.fixture(scope="module")
def messages() -> list[tuple[str, bytes, bytes]]:
    return [(e.topic, e.key, e.value) for e in generate(40, seed=11) if e.value is not None]


@pytest.fixture(scope="module")
def documents(messages: list[tuple[str, bytes, bytes]]) -> list[tuple[str, bytes, bytes]]:
    """The messages that are JSON objects (the stream's malformed ones are not)."""
    out = []
    for topic, key, value in messages:
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError:
            continue
        if isinstance(doc, dict):
            out.append((topic, key, value))
    return out


def test_the_extension_is_installed() -> None:
    # CI and `make venv` build it; without it every message takes the Python path (slower).
    assert fastpath_available() is None


def test_every_example_table_is_compiled(paths: Paths) -> None:
    for topic in paths.mapper.spec.topics:
        _, python_only = fastpath_plan(paths.mapper, topic)
        assert python_only == []


def test_the_synthetic_stream_maps_the_same_and_only_the_unusual_messages_decline(
    paths: Paths, messages: list[tuple[str, bytes, bytes]]
) -> None:
    declined: Counter[str] = Counter()
    taken = 0
    for offset, (topic, key, value) in enumerate(messages):
        if paths.check(topic, key, value, offset):
            taken += 1
            continue
        ref = paths.reference(topic, key, value, offset)
        if isinstance(ref, str):
            declined["dead letter"] += 1
        elif PLACEHOLDER.encode() in value or base64.b64encode(PLACEHOLDER.encode()) in value:
            declined["unchanged TOAST"] += 1
        else:
            declined["unexpected"] += 1
    assert declined["unexpected"] == 0, declined
    assert declined["dead letter"] > 0  # the stream's malformed events: the Python path names them
    assert taken > 0.9 * len(messages)


# -- mutations -------------------------------------------------------------------------------

_B64 = st.integers(-(2**100), 2**100).map(
    lambda n: base64.b64encode(n.to_bytes((n.bit_length() + 8) // 8, "big", signed=True)).decode()
)
_TRICKY_TEXT = st.sampled_from(
    [
        "",
        "AA==",
        "AB==",
        "A===",
        "////",
        "gAAAAAAAAAAAAAAAAAAAAAAA",
        "12.50",
        "1E+2",
        "2024-01-01",
        "2024-01-01T10:00:00+02:00",
        '["1", "2"]',
        '["1", 2]',
        "[1, 2, 3]",
        '{"state": "CA", "zip": 90001}',
        '{"state": null}',
        "not json",
        "A",
        "ACTIVE",
        "T",
        "mysql-bin.000003",
        "bin.",
        "99999999999999999999",
        "999999999999999999999",
        PLACEHOLDER,
        "tab\there",
        "bell\x07",
        "del\x7f",
        "caf\u00e9",
        "\u2028",
        "emoji \U0001f600",
    ]
)
_NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from(
        [
            *(0, 1, -1, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64),
            -(2**63) - 1,
            *(FIRST_DAY, FIRST_DAY - 1, LAST_DAY, LAST_DAY + 1),  # the date span's bounds, in days
            *(FIRST_DAY * 86_400_000_000, (LAST_DAY + 1) * 86_400_000_000, -1, 999, 1001),
        ]
    ),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1.0, 1e300, 2.5]),
)
_SCALARS = st.one_of(st.none(), st.booleans(), _NUMBERS, st.text(max_size=12), _TRICKY_TEXT, _B64)
_VALUES = st.one_of(
    _SCALARS,
    st.lists(_SCALARS, max_size=3),
    st.dictionaries(st.sampled_from(["state", "zip", "id", "x"]), _SCALARS, max_size=3),
)
_DELETE: Any = object()


def _spots(doc: dict[str, Any]) -> list[tuple[str, ...]]:
    """Every place worth changing in a Debezium document (one level into the blocks)."""
    spots: list[tuple[str, ...]] = [("op",), ("source",), ("after",), ("before",), ("transaction",)]
    for block in ("after", "before", "source", "transaction"):
        if isinstance(doc.get(block), dict):
            spots += [(block, name) for name in doc[block]]
    return spots


def _mutate(doc: Any, spot: tuple[str, ...], value: Any) -> Any:
    target = doc
    for step in spot[:-1]:
        if not isinstance(target, dict) or not isinstance(target.get(step), dict):
            return doc
        target = target[step]
    if value is _DELETE:
        target.pop(spot[-1], None)
    else:
        target[spot[-1]] = value
    return doc


def _dumps(doc: Any, ascii_only: bool) -> bytes:
    # The standard library writes integers beyond 64 bits (orjson refuses them) and, with
    # ensure_ascii, \\u escapes: both shapes a producer may send.
    return json.dumps(doc, ensure_ascii=ascii_only, separators=(",", ":")).encode()


def _create(messages: list[tuple[str, bytes, bytes]], topic: str) -> tuple[str, bytes, bytes]:
    """The first create (or snapshot read) on ``topic``."""
    for m in messages:
        if m[0] == topic and m[2].startswith(b"{") and m[2].endswith(b"}"):
            doc = orjson.loads(m[2])
            if doc.get("op") in ("c", "r") and isinstance(doc.get("after"), dict):
                return m
    raise AssertionError(f"no create on {topic}")


def _creates(
    paths: Paths, messages: list[tuple[str, bytes, bytes]]
) -> Iterator[tuple[str, bytes, dict[str, Any]]]:
    """(topic, key, parsed create) of one create per table."""
    for topic in sorted(paths.mapper.spec.topics):
        _, key, value = _create(messages, topic)
        yield topic, key, orjson.loads(value)


def _each_column(
    paths: Paths, messages: list[tuple[str, bytes, bytes]]
) -> Iterator[tuple[str, bytes, dict[str, Any], str]]:
    """(topic, key, parsed create, column) for every source column of one create per table."""
    for topic, key, doc in _creates(paths, messages):
        for column in doc["after"]:
            yield topic, key, doc, column


GRID_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    2,
    2**31,
    2**63 - 1,
    2**63,
    2**64 - 1,
    2**64,
    -(2**63) - 1,
    FIRST_DAY,
    FIRST_DAY - 1,
    LAST_DAY,
    LAST_DAY + 1,
    FIRST_DAY * 86_400_000_000,
    FIRST_DAY * 86_400_000_000 - 1,
    (LAST_DAY + 1) * 86_400_000_000 - 1,
    (LAST_DAY + 1) * 86_400_000_000,
    1.0,
    -0.0,
    2.5,
    1e300,
    [],
    {},
    ["x"],
    {"state": "CA"},
]
GRID_TEXT = [
    "",
    "AA==",
    "AB==",
    "A===",
    "AAAA====",
    "////",
    "gAAAAAAAAAAAAAAAAAAAAAAA",
    "/////////////////w==",
    "12.50",
    "2024-01-01",
    "2024-01-01T10:00:00+02:00",
    '{"state": "CA", "zip": 90001}',
    '{"state": null}',
    '{"state": ["CA"]}',
    '"{\\"state\\": \\"CA\\"}"',
    "[1]",
    "not json",
    "A",
    "T",
    "ACTIVE",
    "PAID",
    "MD",
    "self",
    "tab\there",
    "new\nline",
    "bell\x07",
    "nul\x00",
    "del\x7f",
    "esc\x1b",
    "caf\u00e9",
    "\u2028",
    "\U0001f600",
    PLACEHOLDER,
]


def test_every_column_of_every_table_against_edge_values(
    paths: Paths, messages: list[tuple[str, bytes, bytes]]
) -> None:
    # Each value in each source column of one create per table: what the converters refuse
    # must be declined, what they accept must come out the same.
    outcomes: Counter[bool] = Counter()
    for topic, key, doc, column in _each_column(paths, messages):
        for probe in [*GRID_VALUES, *GRID_TEXT]:
            mutated = {**doc, "after": {**doc["after"], column: probe}}
            for ascii_only in (True, False):
                outcomes[paths.check(topic, key, _dumps(mutated, ascii_only))] += 1
    assert outcomes[True] > 1000, outcomes
    assert outcomes[False] > 1000, outcomes


SOURCES: list[Any] = [
    {"connector": "postgresql", "schema": "public", "sequence": '["1", "2"]', "lsn": 2},
    {"connector": "postgresql", "schema": "public", "sequence": '[null, "2"]'},
    {"connector": "postgresql", "schema": "public", "sequence": "[1, 2]"},
    {"connector": "postgresql", "schema": "public", "sequence": ["1", 2]},
    {"connector": "postgresql", "schema": "public", "sequence": '["1"]'},
    {"connector": "postgresql", "schema": "public", "sequence": '["1", "2", "3"]'},
    {"connector": "postgresql", "schema": "public", "sequence": '{"a": 1}'},
    {"connector": "postgresql", "schema": "public", "sequence": "oops"},
    {"connector": "postgresql", "schema": "public", "sequence": '["99999999999999999999", "0"]'},
    {"connector": "postgresql", "schema": "public", "sequence": '[null, "9223372036854775807"]'},
    {"connector": "postgresql", "schema": "public", "sequence": '[null, "9223372036854775808"]'},
    {"connector": "postgresql", "schema": "public", "sequence": '["999999999999999999999", "0"]'},
    {"connector": "postgresql", "schema": "public", "sequence": '["-1", "0"]'},
    {"connector": "postgresql", "schema": "public", "sequence": '["", "0"]'},
    {"connector": "postgresql", "schema": "public", "sequence": '[1.5, "0"]'},
    {"connector": "postgresql", "schema": "public", "sequence": '[true, "0"]'},
    {"connector": "postgresql", "schema": "public", "sequence": None, "lsn": 7},
    {"connector": "postgresql", "schema": "public", "lsn": "7"},
    {"connector": "postgresql", "schema": "public", "lsn": -7},
    {"connector": "postgresql", "schema": "public", "lsn": None},
    {"connector": "postgresql", "schema": "public"},
    {"connector": "postgresql", "schema": "", "lsn": 7},
    {"connector": "postgresql", "schema": 5, "lsn": 7},
    {"connector": "postgresql", "lsn": 7},
    {"connector": "mysql", "db": "public", "file": "mysql-bin.000003", "pos": 154, "row": 2},
    {"connector": "mysql", "db": "public", "file": "mysql-bin.000003", "pos": 154},
    {"connector": "mysql", "db": "public", "file": "mysql-bin.000003", "pos": 154, "row": None},
    {"connector": "mysql", "db": "public", "file": "mysql-bin.000003", "pos": 154, "row": 0.0},
    {"connector": "mysql", "db": "public", "file": "mysql-bin.000003", "pos": 154, "row": ""},
    {"connector": "mysql", "db": "public", "file": "mysql-bin.000003", "pos": 154, "row": True},
    {"connector": "mysql", "db": "public", "file": "mysql-bin.000003", "pos": True},
    {"connector": "mysql", "db": "public", "file": "mysql-bin.000003", "pos": "154"},
    {"connector": "mysql", "db": "public", "file": "mysql-bin.", "pos": 154},
    {"connector": "mysql", "db": "public", "file": "mysqlbin", "pos": 154},
    {"connector": "mysql", "db": "public", "file": "bin.0000000000000000001", "pos": 154},
    {"connector": "mysql", "db": "public", "file": "bin.12a", "pos": 154},
    {"connector": "mysql", "db": "public", "file": "a.b.7", "pos": 2**64},
    {"connector": "mongodb", "db": "public", "file": "a.7", "pos": 1},
    {"connector": "postgresql", "schema": "public", "lsn": 7, "table": "other"},
]


SNAPSHOT_MARKS: list[Any] = [
    "true",
    "first",
    "last",
    "incremental",
    "false",
    None,
    7,
    "first_in_data_collection",
]
"""``source.snapshot`` values: an initial read's phase is its LSN's, an incremental read's the
generation's; ``last`` is declined (its completion is the Python path's)."""


@pytest.mark.parametrize("generation", [0, 26387816, 2**63 - 1])
def test_source_blocks_give_the_same_version_or_decline(
    paths: Paths, messages: list[tuple[str, bytes, bytes]], generation: int
) -> None:
    outcomes: Counter[bool] = Counter()
    for index, (topic, key, doc) in enumerate(_creates(paths, messages)):
        table = doc["source"]["table"]
        for number, source in enumerate(SOURCES):
            mark = SNAPSHOT_MARKS[(index + number) % len(SNAPSHOT_MARKS)]
            for op in ("c", "u", "r", "d", "x"):
                mutated = {**doc, "op": op, "source": {"table": table, **source, "snapshot": mark}}
                if op == "d":
                    mutated["before"] = mutated["after"]
                outcomes[paths.check(topic, key, _dumps(mutated, True), generation=generation)] += 1
                outcomes[
                    paths.check(topic, key, _dumps({**mutated, "before": None}, True), generation=generation)
                ] += 1
    assert outcomes[True] > 300, outcomes
    assert outcomes[False] > 300, outcomes


def test_the_last_read_of_a_snapshot_is_declined(
    paths: Paths, messages: list[tuple[str, bytes, bytes]]
) -> None:
    """The Python path records the snapshot's completion (connector.ingest.resnapshot)."""
    topic, key, doc = next(iter(_creates(paths, messages)))
    source = {**doc["source"], "connector": "postgresql", "lsn": 9, "sequence": '[null, "9"]'}
    assert paths.check(topic, key, _dumps({**doc, "op": "r", "source": {**source, "snapshot": "true"}}, True))
    assert not paths.check(
        topic, key, _dumps({**doc, "op": "r", "source": {**source, "snapshot": "last"}}, True)
    )


# Raw JSON tokens put in place of one value: invalid ones must be declined (orjson refuses
# the message); valid ones must map the same.
TOKENS = [
    *(b"01", b"1.", b".5", b"-", b"1e", b"1e+", b"+1", b"--1", b"0x10", b"1_000"),
    *(b"NaN", b"Infinity", b"-Infinity", b"nul", b"tru", b"True", b"None", b"'x'", b"[1,]", b"[,1]"),
    *(b'{"a":1,}', b'{"a" 1}', b"{a:1}", b"1 2", b'"a" "b"', b'"\x01"', b'"\t"', b'"\\x41"', b'"\\u00"'),
    *(
        b'"\\ud800"',
        b'"\\udc00"',
        b'"\\udc00\\ud800"',
        b'"\\ud800x"',
        b'"\xff"',
        b'"\xc0\xaf"',
        b'"\xed\xa0\x80"',
    ),
    *(b'"\\q"', b'"abc', b"[1", b"{", b"1e400", b"-1e400", b"/* c */ 1", b"1 // c"),
    *(b"1E2", b"-0", b"0.0", b"-0.0e-0", b'"\\u0041"', b'"\\ud83d\\ude00"', b'"\\/"', b'"\\b\\f\\n\\r\\t"'),
    *(b" 7 ", b"\t7\n", b"\r7", b"[]", b"{}", b'{"state":"CA"}', b'"\xc3\xa9"', b'"\xe2\x80\xa8"'),
    *(b"12345678901234567890", b"123456789012345678901234", b"-9223372036854775808", b"1.5e3"),
    *(b"1e-400", b"1" + b"0" * 400, b"-" + b"9" * 320, b"0." + b"0" * 400 + b"1"),
]


def test_raw_tokens_in_every_column_map_the_same_or_decline(
    paths: Paths, messages: list[tuple[str, bytes, bytes]]
) -> None:
    outcomes: Counter[bool] = Counter()
    marker = "\u2063slot\u2063"  # replaced by the raw token after dumping
    for topic, key, doc, column in _each_column(paths, messages):
        text = _dumps({**doc, "after": {**doc["after"], column: marker}}, False)
        for token in TOKENS:
            outcomes[paths.check(topic, key, text.replace(orjson.dumps(marker), token))] += 1
    assert outcomes[True] > 100, outcomes


def test_every_truncation_and_byte_flip_maps_the_same_or_declines(
    paths: Paths, documents: list[tuple[str, bytes, bytes]]
) -> None:
    for topic, key, value in documents[:: max(1, len(documents) // 12)]:
        for cut in range(len(value)):
            assert not paths.check(topic, key, value[:cut])  # never valid JSON
        for i in range(0, len(value), 3):
            for byte in (0x00, 0x22, 0x2C, 0x30, 0x5C, 0x7D, 0x80, 0xFF):
                paths.check(topic, key, value[:i] + bytes([byte]) + value[i + 1 :])


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_messages_map_the_same_or_decline(
    paths: Paths, documents: list[tuple[str, bytes, bytes]], data: st.DataObject
) -> None:
    topic, key, value = data.draw(st.sampled_from(documents))
    doc = orjson.loads(value)
    key_doc = orjson.loads(key)
    for _ in range(data.draw(st.integers(1, 3))):
        if data.draw(st.integers(0, 5)) == 0:
            column = data.draw(st.sampled_from(sorted(key_doc) or ["id"]))
            key_doc = _mutate(key_doc, (column,), data.draw(st.one_of(_SCALARS, st.just(_DELETE))))
        else:
            spot = data.draw(st.sampled_from(_spots(doc)))
            doc = _mutate(doc, spot, data.draw(st.one_of(_VALUES, st.just(_DELETE))))
    ascii_only = data.draw(st.booleans())
    paths.check(topic, _dumps(key_doc, ascii_only), _dumps(doc, ascii_only))


@given(
    unscaled=st.integers(-(10**12) + 1, 10**12 - 1),
    pad=st.integers(0, 4),
    days=st.integers(FIRST_DAY, LAST_DAY),
    micros=st.integers(FIRST_DAY * 86_400_000_000, (LAST_DAY + 1) * 86_400_000_000 - 1),
)
def test_typed_values_in_range_are_taken_and_written_as_python_writes_them(
    paths: Paths, messages: list[tuple[str, bytes, bytes]], unscaled: int, pad: int, days: int, micros: int
) -> None:
    # Decimals (base64 of the unscaled integer, any width), dates (days) and timestamps
    # (micros) across the whole accepted span: the fast path must take every one of them.
    topic = next(t for t in sorted(paths.fast) if t.endswith(".claim"))
    _, key, value = _create(messages, topic)
    doc = orjson.loads(value)
    width = (unscaled.bit_length() + 8) // 8 + pad
    doc["after"]["billed"] = base64.b64encode(unscaled.to_bytes(width, "big", signed=True)).decode()
    doc["after"]["submitted_on"] = days
    doc["after"]["updated_at"] = micros
    assert paths.check(topic, key, orjson.dumps(doc))


# -- schema-wrapped documents (JsonConverter with schemas.enable=true) -------------------------


def test_wrapped_messages_are_taken_and_map_the_same(
    paths: Paths, documents: list[tuple[str, bytes, bytes]]
) -> None:
    taken = 0
    for offset, (topic, key, value) in enumerate(documents):
        doc = orjson.loads(value)
        typed = column_schemas(paths.mapper, topic)
        wrapped = orjson.dumps(wrap(doc, typed))
        with_key = wrap_key(key, {})
        took = paths.check(topic, with_key, wrapped, offset)
        assert paths.check(topic, key, wrapped, offset) == took
        taken += took
    assert taken > 0.8 * len(documents)


SCHEMA_VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("micros", {"type": "int64", "name": "io.debezium.time.MicroTimestamp"}),
    ("millis", {"type": "int64", "name": "io.debezium.time.Timestamp"}),
    ("connect millis", {"type": "int64", "name": "org.apache.kafka.connect.data.Timestamp"}),
    ("nanos", {"type": "int64", "name": "io.debezium.time.NanoTimestamp"}),
    ("zoned", {"type": "string", "name": "io.debezium.time.ZonedTimestamp"}),
    ("date", {"type": "int32", "name": "io.debezium.time.Date"}),
    ("connect date", {"type": "int32", "name": "org.apache.kafka.connect.data.Date"}),
    (
        "decimal 2",
        {"type": "bytes", "name": "org.apache.kafka.connect.data.Decimal", "parameters": {"scale": "2"}},
    ),
    (
        "decimal 3",
        {"type": "bytes", "name": "org.apache.kafka.connect.data.Decimal", "parameters": {"scale": "3"}},
    ),
    (
        "decimal int 2",
        {"type": "bytes", "name": "org.apache.kafka.connect.data.Decimal", "parameters": {"scale": 2}},
    ),
    (
        "decimal '2.0'",
        {"type": "bytes", "name": "org.apache.kafka.connect.data.Decimal", "parameters": {"scale": "2.0"}},
    ),
    (
        "decimal ' 2'",
        {"type": "bytes", "name": "org.apache.kafka.connect.data.Decimal", "parameters": {"scale": " 2"}},
    ),
    ("decimal no scale", {"type": "bytes", "name": "org.apache.kafka.connect.data.Decimal"}),
    (
        "decimal as int64",
        {"type": "int64", "name": "org.apache.kafka.connect.data.Decimal", "parameters": {"scale": "2"}},
    ),
    (
        "decimal 9999",
        {"type": "bytes", "name": "org.apache.kafka.connect.data.Decimal", "parameters": {"scale": "9999"}},
    ),
    ("variable scale", {"type": "struct", "name": "io.debezium.data.VariableScaleDecimal"}),
    ("plain string", {"type": "string"}),
    ("name not text", {"type": "int64", "name": 7}),
]


def test_every_logical_type_on_every_column_maps_the_same_or_declines(
    paths: Paths, messages: list[tuple[str, bytes, bytes]]
) -> None:
    # Each logical type on each column (right or wrong for the field), with in-range,
    # out-of-range and ill-typed values: the Python path converts every logical column before
    # mapping and refuses what does not convert; the fast path must agree or decline.
    outcomes: Counter[bool] = Counter()
    probes: list[Any] = [
        None,
        0,
        -1,
        19723,
        1_700_000_000_000_000,
        2**40,
        10**17,
        "AA==",
        "MDk=",
        "",
        "x",
        1.5,
        True,
    ]
    for topic, key, doc, column in _each_column(paths, messages):
        typed = column_schemas(paths.mapper, topic)
        for _, logical in SCHEMA_VARIANTS:
            for probe in probes:
                mutated = {**doc, "after": {**doc["after"], column: probe}}
                wrapped = wrap(mutated, {**typed, column: logical})
                outcomes[paths.check(topic, key, orjson.dumps(wrapped))] += 1
    assert outcomes[True] > 500, outcomes
    assert outcomes[False] > 500, outcomes


def test_odd_schemas_and_splits_map_the_same_or_decline(
    paths: Paths, messages: list[tuple[str, bytes, bytes]]
) -> None:
    outcomes: Counter[bool] = Counter()
    for topic, key, doc in _creates(paths, messages):
        typed = column_schemas(paths.mapper, topic)
        good = wrap(doc, typed)
        id_column = next(iter(orjson.loads(key)))
        variants: list[bytes] = [
            orjson.dumps(good),
            orjson.dumps({"schema": None, "payload": doc}),
            orjson.dumps({"schema": {"type": "string"}, "payload": doc}),
            orjson.dumps({"schema": {"type": "struct", "fields": "x"}, "payload": doc}),
            orjson.dumps({"schema": {"type": "struct", "fields": []}, "payload": doc}),
            orjson.dumps({"schema": good["schema"], "payload": None}),
            orjson.dumps({"schema": good["schema"], "payload": [doc]}),
            orjson.dumps({"payload": doc, "schema": good["schema"]}),
            orjson.dumps({"schema": good["schema"], "payload": doc, "extra": 1}),
            orjson.dumps({"schema": good["schema"], "payload": {"schema": 1, "payload": doc}}),
            orjson.dumps({"schema": {**good["schema"], "payload": 1}, "payload": doc}),
            orjson.dumps({"schema": {**good["schema"], "x": 'a,"payload":b'}, "payload": doc}),
            orjson.dumps(
                wrap({**doc, "after": {**doc["after"], id_column: 5}}, {**typed, id_column: LOGICAL["date"]})
            ),
            orjson.dumps(good)[:-1] + b" }",
            b'{"schema":' + orjson.dumps(good["schema"]) + b',  "payload":' + orjson.dumps(doc) + b"}",
        ]
        # A key column beside the id, equal in the row: typed by the key's own schema, the
        # Python path compares the typed value with the row's and refuses the message.
        text_column = next(c for c, v in doc["after"].items() if isinstance(v, str) and c != id_column)
        wide = orjson.dumps({**orjson.loads(key), text_column: doc["after"][text_column]})
        keys = [
            key,
            wrap_key(key, {}),
            wrap_key(key, {id_column: LOGICAL["date"]}),
            b'{"schema":null,"payload":' + key + b"}",
            wide,
            wrap_key(wide, {}),
            wrap_key(wide, {text_column: LOGICAL["date"]}),
        ]
        for value_variant in variants:
            for key_variant in keys:
                outcomes[paths.check(topic, key_variant, value_variant)] += 1
    assert outcomes[True] > 20, outcomes
    assert outcomes[False] > 20, outcomes
