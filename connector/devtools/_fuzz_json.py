"""Structural mutations of JSON parts (values, keys, key headers), on their parsed trees (private).

Each is a shape that broke, or could break, a decoder written for well-behaved producers:
nesting past every parser's comfort, numbers past 64 bits or past any float, strings and
decimals of hundreds of kilobytes, objects with tens of thousands of keys or the same key
twice, the wrong type anywhere, Debezium's own fields (op, source, sequence, transaction,
the Connect schema) set to what a producer should never send, text a JSON text column parses.
"""

from __future__ import annotations

import base64
import copy
import random
from collections.abc import Callable
from typing import Any

import orjson

from connector.devtools._fuzz_corpus import PLACEHOLDER, Kind
from connector.devtools._fuzz_draft import ADD, STRUCT, Draft, Mutation, dumps_any
from connector.devtools.debezium_schema import wrap_key
from connector.devtools.synthetic import TABLES

__all__ = ["JSON_MUTATIONS", "deep_bytes"]

_JSON: frozenset[Kind] = frozenset({"json", "wrapped"})
_ANY_JSON: frozenset[Kind] = frozenset({"json", "wrapped", "avro"})  # Avro messages carry JSON key headers
_WRAPPED: frozenset[Kind] = frozenset({"wrapped"})

WRONG: list[Any] = [None, True, False, 0, -1, 1.5, "", "x", "1", "true", [], [None], {}, {"a": 1}, ["1", "2"]]
_HUGE_INTS = [2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**30, -(10**30)]
_ODD_NUMBERS = [
    *(b"1e400", b"-1e400", b"1e-400", b"NaN", b"Infinity", b"-Infinity", b"-0", b"-0.0", b"1.0", b"1E2"),
    *(b"0.1e99999", b"1" + b"0" * 400 + b".5", b"01", b"+1", b".5", b"1.", b"0x10", b"1_000", b"--1"),
    *(b"1e", b"9" * 20 + b".0", b"123456789012345678901234567890e-10", b"5e-324", b"2e308", b"-", b"0e0"),
]
_BAD_STRINGS = [
    *(b'"\\ud800"', b'"\\udc00\\ud800"', b'"\\ud800x"', b'"\\u0000"', b'"\x01"', b'"\t"', b'"\\q"'),
    *(b'"\\x41"', b'"\\u00"', b'"\xff"', b'"\xc0\xaf"', b'"\xed\xa0\x80"', b'"abc', b'"\\"', b'"\\u2028"'),
    *(b'"\xf4\x90\x80\x80"', b'"\\/"', b'"' + PLACEHOLDER.encode() + b'\\u0000"', b'"\\uD83D\\uDE00"'),
]
_LOGICAL_NAMES = [
    *("io.debezium.time.Date", "io.debezium.time.MicroTimestamp", "io.debezium.time.Timestamp"),
    *("io.debezium.time.NanoTimestamp", "io.debezium.time.ZonedTimestamp", "io.debezium.time.MicroTime"),
    *("org.apache.kafka.connect.data.Decimal", "org.apache.kafka.connect.data.Date"),
    *("org.apache.kafka.connect.data.Timestamp", "io.debezium.data.VariableScaleDecimal"),
    *("io.debezium.data.Json", "io.debezium.data.Enum", "io.debezium.data.Uuid", None, "", "x"),
]
_CONNECT_TYPES = [
    "int8",
    "int16",
    "int32",
    "int64",
    "float64",
    "boolean",
    "string",
    "bytes",
    "struct",
    "map",
    "",
]
_SCALES = ["2", "0", "-5", "1000000", "99999999999999999999", "x", "", 2, None, "2147483648"]
DEBEZIUM: dict[tuple[str, ...], list[Any]] = {
    ("op",): ["c", "u", "d", "r", "t", "m", "x", "", "C", None, 1, ["c"]],
    ("source", "connector"): ["postgresql", "mysql", "mongodb", "sqlserver", "", None, 7],
    ("source", "table"): [*TABLES, "unknown", "", None, "family\x00", "FAMILY", 5],
    ("source", "schema"): ["public", "other", "", None, ["public"]],
    ("source", "sequence"): [
        *('["1","2"]', '[null,"2"]', "[1,2]", '["1"]', "oops", '["18446744073709551616","0"]'),
        *('["-1","0"]', "[" * 2000, '["1","2","3"]', None, ["1", "2"], '[1.5,"0"]', '["1" ,"2"]', ""),
        *('["' + "9" * 5000 + '","0"]', '["1","2"]\x00', '{"a":1}'),
    ],
    ("source", "lsn"): [0, -1, 2**64, 2**63, 2**64 - 1, "7", None, 1.5, True, 10**400],
    ("source", "snapshot"): ["true", "false", "last", "incremental", True, None],
    ("source", "ts_ms"): [0, -1, 2**63 - 1, "x", None, 1e300],
    ("source", "file"): ["mysql-bin.000003", "bin.", "a.b.7", "", None],
    ("source", "pos"): [154, "154", -1, 2**64, None],
    ("source", "row"): [0, 2, "", None, 1.0],
    ("source",): [None, {}, [], "source", {"connector": "postgresql"}],
    ("transaction",): [
        None,
        {},
        {"id": 1},
        {"id": "x", "total_order": 1, "data_collection_order": "2"},
        "tx",
    ],
    ("ts_ms",): [None, -1, 2**63, "now"],
    ("before",): [None, {}, [], "row"],
    ("after",): [None, {}, [], "row", [{}]],
}


def deep_bytes(rng: random.Random) -> bytes:
    """Nesting around every limit: the 64 both paths enforce, orjson's 254 and 1024, Python's
    recursion limit, and far beyond; empty containers at the edge count differently."""
    depth = rng.choice([63, 64, 65, 66, 100, 254, 255, 256, 1000, 5000, 100_000])
    inner = rng.choice([b"1", b"[]", b"{}", b'"x"', b"null"])
    shape = rng.randrange(3)
    if shape == 0:
        return b"[" * depth + inner + b"]" * depth
    if shape == 1:
        return b'{"a":' * depth + inner + b"}" * depth
    return b'{"a":[' * (depth // 2) + inner + b"]}" * (depth // 2)


def _deep_nesting(d: Draft, rng: random.Random) -> None:
    spot = d.spot(rng)
    if spot is not None:
        spot.set(d.raw(deep_bytes(rng)))


def _huge_int(d: Draft, rng: random.Random) -> None:
    spot = d.spot(rng)
    if spot is None:
        return
    if rng.random() < 0.5:
        spot.set(d.value_of(rng.choice(_HUGE_INTS)))
    else:  # past 4300 digits Python's int() refuses; quadratic conversions before that
        digits = rng.choice([20, 309, 1000, 4300, 4301, 10_000, 200_000])
        spot.set(d.raw(b"-" * rng.randrange(2) + b"1" + b"0" * (digits - 1)))


def _odd_number(d: Draft, rng: random.Random) -> None:
    spot = d.spot(rng)
    if spot is not None:
        spot.set(d.raw(rng.choice(_ODD_NUMBERS)))


def _long_string(d: Draft, rng: random.Random) -> None:
    spot = d.spot(rng)
    if spot is None:
        return
    n = rng.choice([70_000, 200_000, 600_000])
    shape = rng.randrange(5)
    if shape == 0:
        spot.set("x" * n)
    elif shape == 1:
        spot.set("\u00e9\u2028\U0001f600" * (n // 9))
    elif shape == 2:
        spot.set("9" * n)  # a number as text, where a column converts text to numbers
    elif shape == 3:
        spot.set(d.raw(b'"' + b"\\u00e9" * (n // 6) + b'"'))  # escapes, decoded by the parser
    else:
        spot.set(base64.b64encode(rng.randbytes(n * 3 // 4)).decode())


def _huge_decimal(d: Draft, rng: random.Random) -> None:
    spot = d.spot(rng)
    if spot is None:
        return
    text = base64.b64encode(rng.randbytes(rng.choice([16, 17, 64, 128, 129, 1000, 150_000]))).decode()
    if rng.random() < 0.3:  # Debezium's VariableScaleDecimal struct
        spot.set({"scale": d.value_of(rng.choice([0, 2, -5, 10**6, 2**31, 2**70])), "value": text})
    else:
        spot.set(text)


def _many_keys(d: Draft, rng: random.Random) -> None:
    spot = d.spot(rng)
    if spot is None:
        return
    n = rng.choice([1_000, 10_000, 30_000, 60_000, 100_000])
    extra = b",".join(b'"c%d":%d' % (i, i) for i in range(n))
    node = spot.get()
    if isinstance(node, dict) and node:  # a wide row: its own columns and many more
        spot.set(d.raw(dumps_any(node)[:-1] + b"," + extra + b"}"))
    else:
        spot.set(d.raw(b"{" + extra + b"}"))


_DUPLICATES_BYTES = 2_000_000


def _duplicate_keys(d: Draft, rng: random.Random) -> None:
    spot = d.spot(rng, where=lambda v: isinstance(v, dict) and bool(v))
    if spot is None:
        return
    items = list(spot.get().items())
    name, value = rng.choice(items)
    other = rng.choice([value, None, "x", 0, {}, [value]])
    dup = dumps_any(name) + b":" + dumps_any(d.value_of(other))
    pieces = [dumps_any(k) + b":" + dumps_any(v) for k, v in items]
    # Capped at about 2 MB of duplicates: a duplicated value that an earlier mutation made
    # large (100,000 keys) times 10,000 built a 20 GB message and the kernel killed the fuzzer;
    # past the ingest's size limit a message is refused by size alone anyway.
    count = min(rng.choice([1, 1, 2, 100, 10_000]), max(1, _DUPLICATES_BYTES // len(dup)))
    pieces = [dup] * count + pieces if rng.random() < 0.5 else pieces + [dup] * count
    spot.set(d.raw(b"{" + b",".join(pieces) + b"}"))


def _wrong_type(d: Draft, rng: random.Random) -> None:
    spot = d.spot(rng)
    if spot is not None:
        spot.set(copy.deepcopy(rng.choice(WRONG)))


def _delete_field(d: Draft, rng: random.Random) -> None:
    spot = d.spot(rng)
    if spot is not None:
        spot.remove()


def _add_field(d: Draft, rng: random.Random) -> None:
    spot = d.spot(rng, where=lambda v: isinstance(v, dict))
    if spot is None:
        return
    names = ["op", "before", "after", "source", "schema", "payload", "transaction", "ts_ms", "", "\u0000"]
    name = rng.choice([*names, "x" * 1000, *spot.get()])
    spot.get()[name] = copy.deepcopy(rng.choice(WRONG))
    spot.set(spot.get())


def _debezium_fields(d: Draft, rng: random.Random) -> None:
    payload = d.payload()
    if payload is None or d.form["value"] != "json":
        return
    path, choices = rng.choice(list(DEBEZIUM.items()))
    target: Any = payload
    for step in path[:-1]:
        target = target.get(step)
        if not isinstance(target, dict):
            return
    value = copy.deepcopy(rng.choice(choices))
    target[path[-1]] = d.value_of(value)


def _splice(d: Draft, rng: random.Random) -> None:
    """A node of another seed's document in place of one of this one's (cross-over)."""
    spot = d.spot(rng)
    donors = d.corpus.seeds.get("json", []) + d.corpus.seeds.get("wrapped", [])
    if spot is None or not donors:
        return
    try:
        other = orjson.loads(rng.choice(donors).message.value or b"")
    except orjson.JSONDecodeError:
        return
    nodes = [other]
    stack = [other]
    while stack:
        node = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
        for child in children:
            nodes.append(child)
            if isinstance(child, dict | list):
                stack.append(child)
    spot.set(rng.choice(nodes))


def _bad_string(d: Draft, rng: random.Random) -> None:
    spot = d.spot(rng)
    if spot is not None:
        spot.set(d.raw(rng.choice(_BAD_STRINGS)))


def _placeholder(d: Draft, rng: random.Random) -> None:
    spot = d.spot(rng)
    if spot is not None:
        encoded = base64.b64encode(PLACEHOLDER.encode()).decode()
        spot.set(rng.choice([PLACEHOLDER, encoded, PLACEHOLDER + "x", " " + PLACEHOLDER, [PLACEHOLDER]]))


def _json_text(d: Draft, rng: random.Random) -> None:
    """JSON text in a string, where a json/jsonb column (``address``) or ``sequence`` is parsed."""
    spot = d.spot(rng, where=lambda v: isinstance(v, str))
    if spot is None:
        return
    n = rng.choice([64, 65, 1000, 100_000])
    spot.set(
        rng.choice(
            [
                "[" * n + "]" * n,
                '{"state":' * n + '"CA"' + "}" * n,
                '{"state":"CA","state":"NY"}',
                '{"state":1e400,"zip":' + "9" * 5000 + "}",
                '["CA"]',
                '"CA"',
                "{",
                '{"state":"\\ud800"}',
                "{" + ",".join(f'"k{i}":{i}' for i in range(n)) + "}",
            ]
        )
    )


def _schema_lie(d: Draft, rng: random.Random) -> None:
    """A Connect schema field that says something else: another type, logical name or scale."""
    spot = d.spot(rng, where=lambda v: isinstance(v, dict) and "field" in v)
    if spot is None:
        return
    field = spot.get()
    change = rng.randrange(5)
    if change == 0:
        field["type"] = rng.choice(_CONNECT_TYPES)
    elif change == 1:
        field["name"] = rng.choice(_LOGICAL_NAMES)
    elif change == 2:
        field["parameters"] = {"scale": rng.choice(_SCALES), "connect.decimal.precision": rng.choice(_SCALES)}
    elif change == 3:
        field["field"] = rng.choice(["", "before", "after", "op", None, 1, str(field.get("field")) + "x"])
    else:
        field.pop(rng.choice(["type", "name", "parameters", "optional", "fields"]), None)
    spot.set(field)


def _schema_order(d: Draft, rng: random.Random) -> None:
    """The wrapper itself: payload before schema (the split parse cannot take it), or no schema."""
    part = d.pick_part(rng, "json")
    tree = d.parts.get(part) if part else None
    if part is None or not isinstance(tree, dict) or "schema" not in tree:
        return
    change = rng.randrange(3)
    if change == 0:
        d.parts[part] = {k: tree[k] for k in sorted(tree, reverse=True)}  # payload, schema
    elif change == 1:
        tree["schema"] = copy.deepcopy(rng.choice([None, {}, "schema", [tree["schema"]]]))
    else:
        del tree["schema"]


def _reencode(d: Draft, rng: random.Random) -> None:
    d.style = rng.choice(["ascii", "pretty"])


def _key_headers(d: Draft, rng: random.Random) -> None:
    """``__debezium.oldkey``/``newkey``, as Debezium adds them on a primary-key change."""
    for _ in range(rng.choice([1, 1, 2])):
        raw = rng.choice(d.corpus.key_docs) if d.corpus.key_docs else b"{}"
        if d.seed.kind == "wrapped" and rng.random() < 0.7:
            raw = wrap_key(raw, {})
        d.add_header(rng.choice(["__debezium.oldkey", "__debezium.newkey"]), raw)


def _m(
    name: str, stage: int, kinds: frozenset[Kind], weight: float, fn: Callable[[Draft, random.Random], None]
) -> Mutation:
    return Mutation(name, stage, kinds, weight, fn)


JSON_MUTATIONS = [
    _m("key_headers", ADD, _ANY_JSON, 2, _key_headers),
    _m("deep_nesting", STRUCT, _ANY_JSON, 3, _deep_nesting),
    _m("huge_int", STRUCT, _ANY_JSON, 2, _huge_int),
    _m("odd_number", STRUCT, _ANY_JSON, 2, _odd_number),
    _m("long_string", STRUCT, _ANY_JSON, 1.5, _long_string),
    _m("huge_decimal", STRUCT, _JSON, 2, _huge_decimal),
    _m("many_keys", STRUCT, _ANY_JSON, 1, _many_keys),
    _m("duplicate_keys", STRUCT, _ANY_JSON, 2, _duplicate_keys),
    _m("wrong_type", STRUCT, _ANY_JSON, 4, _wrong_type),
    _m("delete_field", STRUCT, _ANY_JSON, 3, _delete_field),
    _m("add_field", STRUCT, _ANY_JSON, 1.5, _add_field),
    _m("debezium_fields", STRUCT, _JSON, 4, _debezium_fields),
    _m("splice", STRUCT, _JSON, 2, _splice),
    _m("bad_string", STRUCT, _ANY_JSON, 2, _bad_string),
    _m("placeholder", STRUCT, _JSON, 1.5, _placeholder),
    _m("json_text", STRUCT, _JSON, 1.5, _json_text),
    _m("schema_lie", STRUCT, _WRAPPED, 4, _schema_lie),
    _m("schema_order", STRUCT, _WRAPPED, 1.5, _schema_order),
    _m("reencode", STRUCT, _ANY_JSON, 1, _reencode),
]
