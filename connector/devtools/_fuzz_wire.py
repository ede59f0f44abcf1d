"""Mutations of Avro records, of bytes and of whole messages (private to the fuzzer).

Avro records are changed within their schema (the extremes of each field's type: the longest
bytes, the largest long, a date past year 9999, a string of JSON where JSON is parsed), then
encoded again, so the decoder meets them past its framing checks. Byte-level mutations work
on any part once rendered: truncation, flipped bytes, invalid UTF-8, control characters,
framing (BOM, trailing bytes), a schema id or magic byte of someone else, and Avro varints
that announce gigabytes. Message-level ones swap, drop or add what a broker can carry: key
and value swapped, a null key, a tombstone, headers by the hundred or of another name, the
message on another mapped topic.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from typing import Any

from connector.devtools._fuzz_corpus import PLACEHOLDER, Kind
from connector.devtools._fuzz_draft import BYTES, MESSAGE, STRUCT, Draft, Mutation
from connector.devtools._fuzz_json import DEBEZIUM

__all__ = ["WIRE_MUTATIONS"]

_ALL: frozenset[Kind] = frozenset({"json", "wrapped", "avro", "native", "poison"})
_AVRO: frozenset[Kind] = frozenset({"avro"})
_BINARY: frozenset[Kind] = frozenset({"avro", "native"})
_STRUCTURED: frozenset[Kind] = frozenset({"json", "wrapped", "avro", "native"})

_LONGS = [2**63 - 1, -(2**63), 0, -1, 2**53 + 1, -(2**31)]
_INTS = [2**31 - 1, -(2**31), 0, -1, 2_932_897, -719_529, 2**40, -(2**40)]  # days: year 10000, year 0
_STRINGS = [
    *("", "\x00\x01\x1f\x7f", "\u2028\u2029", PLACEHOLDER, '{"state":"CA","state":"NY"}', "9" * 5000),
    *(
        "-0",
        "NaN",
        "1e400",
        "2024-13-45",
        "\U0001f600",
        "[" * 100_000 + "]" * 100_000,
        '{"state":' * 65 + "1" + "}" * 65,
    ),
]
_BOMBS = [
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # the largest varint: a length of 2**63
    b"\xfe\xff\xff\xff\x0f",  # 2 GiB
    b"\x80" * 12,  # an over-long varint
    b"\xfd\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # a negative length
    b"\x02",
]


def _named(schema: Any) -> dict[str, Any]:
    return schema.get("__named_schemas", {}) if isinstance(schema, dict) else {}


def _base(t: Any) -> Any:
    return t.get("type") if isinstance(t, dict) else t


def _matches(t: Any, value: Any, named: dict[str, Any]) -> bool:
    base: str = _base(named.get(t, t) if isinstance(t, str) else t)
    if isinstance(value, bool):
        return base == "boolean"
    if isinstance(value, int):
        return base in ("int", "long")
    if isinstance(value, float):
        return base in ("float", "double")
    if isinstance(value, str):
        return base in ("string", "enum")
    if isinstance(value, bytes):
        return base in ("bytes", "fixed")
    return isinstance(value, dict) and bool(base in ("record", "map"))


Slot = tuple[Any, Any, Any, bool]
"""(container, key, Avro type, nullable): one field value of a record."""


def _slots(t: Any, named: dict[str, Any], container: Any, key: Any, out: list[Slot], nullable: bool) -> None:
    """Every field value under ``container[key]`` with its Avro type, records walked into."""
    value = container[key]
    if isinstance(t, str) and t in named:
        t = named[t]
    if isinstance(t, list):  # a union: the branch the value is in
        branches = [b for b in t if b != "null"]
        if value is None:
            first = branches[0] if branches else None
            if first is not None:
                out.append(
                    (container, key, named.get(first, first) if isinstance(first, str) else first, True)
                )
            return
        if isinstance(value, tuple):  # (record name, fields): the native envelope's Payload
            inner = named.get(value[0])
            if isinstance(inner, dict):
                for f in inner["fields"]:
                    if f["name"] in value[1]:
                        _slots(f["type"], named, value[1], f["name"], out, False)
            return
        branch = next((b for b in branches if _matches(b, value, named)), None)
        if branch is not None:
            _slots(branch, named, container, key, out, "null" in t)
        return
    if _base(t) == "record" and isinstance(value, dict):
        if nullable:
            out.append((container, key, t, True))
        for f in t["fields"]:
            if f["name"] in value:
                _slots(f["type"], named, value, f["name"], out, False)
        return
    out.append((container, key, t, nullable))


def _extreme(t: Any, rng: random.Random, current: Any) -> Any:
    base = _base(t)
    if base == "long":
        return rng.choice([*_LONGS, rng.randrange(-(2**63), 2**63)])
    if base == "int":
        return rng.choice(_INTS)
    if base == "bytes":
        n = rng.choice([0, 1, 16, 17, 128, 129, 1000, 150_000])
        return rng.choice([rng.randbytes(n), b"\xff" * n, b"\x00" * n, PLACEHOLDER.encode()])
    if base == "string":
        return rng.choice([*_STRINGS, "x" * 200_000, "\u00e9" * 100_000])
    if base == "boolean":
        return not current
    if base in ("float", "double"):
        return rng.choice([float("nan"), float("inf"), float("-inf"), 1e308, -0.0])
    if base == "enum":
        return rng.choice(t["symbols"])
    return None if base == "record" else current


def _avro_value(d: Draft, rng: random.Random) -> None:
    """One field of an Avro record set to an extreme of its type (or null, where allowed)."""
    part = d.pick_part(rng, "avro")
    if part is None or d.seed.avro is None:
        return
    schema = d.seed.avro.key_schema if part == "key" else d.seed.avro.value_schema
    holder = {"r": d.parts[part]}
    slots: list[Slot] = []
    _slots(schema, _named(schema), holder, "r", slots, False)
    slots = [s for s in slots if s[0] is not holder]
    if not slots:
        return
    container, key, t, nullable = rng.choice(slots)
    container[key] = None if nullable and rng.random() < 0.2 else _extreme(t, rng, container[key])


def _avro_debezium(d: Draft, rng: random.Random) -> None:
    """Debezium's own fields of an Avro envelope, where its schema lets them go wrong."""
    payload = d.payload()
    if payload is None or d.form["value"] != "avro":
        return
    path, choices = rng.choice([(p, c) for p, c in DEBEZIUM.items() if p[0] in ("op", "source")])
    target: Any = payload
    for step in path[:-1]:
        target = target.get(step)
        if not isinstance(target, dict):
            return
    fits = [
        c for c in choices if c is None or isinstance(c, str) or (type(c) is int and -(2**63) <= c < 2**63)
    ]
    if fits and path[-1] in target:
        target[path[-1]] = rng.choice(fits)


def _newer_version(d: Draft, rng: random.Random) -> None:
    """A later version than any seed's, and mostly than any earlier iteration's, so the change
    applies over the stored row rather than end as stale."""
    major = 40_000_000_000 + d.iteration * 1_000 + rng.randrange(2_000)
    if d.seed.kind == "native" and d.form["value"] == "avro":
        record = d.parts["value"]
        record["SourceVersion"] = major
        if rng.random() < 0.5:  # six entities only: another mutation may have set a version of 2**63-1
            fresh = f"{record['EntityId']}-{d.iteration}"
            record["EntityId"] = fresh
            payload = record.get("Payload")
            if isinstance(payload, tuple) and isinstance(payload[1], dict):
                payload[1]["EntityId"] = fresh
        return
    payload = d.payload()
    if payload is None:
        return
    if payload.get("op") in ("c", "r"):
        payload["op"] = "u"
    source = payload.get("source")
    if isinstance(source, dict):
        source["sequence"] = f'["{major}","{major + 8}"]'
        source["lsn"] = major + 8
        if d.form["value"] == "avro":
            source["snapshot"] = "false"


def _native_payload(d: Draft, rng: random.Random) -> None:
    """An envelope whose parts disagree: another entity's payload, id, or none on an upsert."""
    record = d.parts.get("value")
    if d.form.get("value") != "avro" or not isinstance(record, dict):
        return
    change = rng.randrange(4)
    if change == 0:
        donor = rng.choice(d.corpus.seeds["native"]).avro
        record["Payload"] = copy.deepcopy(donor.value["Payload"]) if donor else None
    elif change == 1:
        record["EntityId"] = rng.choice(["", "x" * 200_000, "fam-0002", PLACEHOLDER, "\x00"])
    elif change == 2:
        record["Payload"] = None
    else:
        record["Operation"] = rng.choice(["UPSERT", "DELETE"])


# -- bytes -------------------------------------------------------------------------------------


def _bytes_part(d: Draft, rng: random.Random) -> tuple[str, bytes] | None:
    part = d.pick_part(rng, "bytes")
    return None if part is None else (part, d.parts[part])


def _truncate(d: Draft, rng: random.Random) -> None:
    got = _bytes_part(d, rng)
    if got:
        part, data = got
        d.parts[part] = data[: rng.choice([0, 1, len(data) // 2, rng.randrange(len(data)), len(data) - 1])]


def _flip_bytes(d: Draft, rng: random.Random) -> None:
    got = _bytes_part(d, rng)
    if got:
        part, data = got
        out = bytearray(data)
        for _ in range(rng.choice([1, 1, 2, 4, 8])):
            out[rng.randrange(len(out))] = rng.choice([*b'{}[]",:0\\-.e \x00\x80\xff', rng.randrange(256)])
        d.parts[part] = bytes(out)


def _insert(d: Draft, rng: random.Random, pieces: list[bytes]) -> None:
    got = _bytes_part(d, rng)
    if got:
        part, data = got
        quotes = [i + 1 for i, b in enumerate(data[:20_000]) if b == 0x22]  # inside strings, mostly
        at = rng.choice(quotes) if quotes and rng.random() < 0.7 else rng.randrange(len(data) + 1)
        d.parts[part] = data[:at] + rng.choice(pieces) + data[at:]


def _invalid_utf8(d: Draft, rng: random.Random) -> None:
    _insert(
        d, rng, [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\x80", b"\xfe"]
    )


def _control_bytes(d: Draft, rng: random.Random) -> None:
    _insert(d, rng, [b"\x00", b"\x01", b"\x1f", b"\x7f", b"\x1b", b"\t", b"\n", b"\r", b"\x0c"])


def _slice_bytes(d: Draft, rng: random.Random) -> None:
    got = _bytes_part(d, rng)
    if got:
        part, data = got
        i = rng.randrange(len(data))
        j = min(len(data), i + rng.choice([1, 4, 16, 256, len(data)]))
        d.parts[part] = data[:j] + data[i:] if rng.random() < 0.5 else data[:i] + data[j:]


def _framing(d: Draft, rng: random.Random) -> None:
    got = _bytes_part(d, rng)
    if got:
        part, data = got
        head = rng.choice([b"", b"\xef\xbb\xbf", b" ", b"\n\t", b"\x00"])
        tail = rng.choice([b"", b" ", b"\n", b"x", b" 1", b"}", b"]", b"\x00", data])
        d.parts[part] = head + data + tail


def _avro_schema_id(d: Draft, rng: random.Random) -> None:
    part = rng.choice(["value", "value", "key"])
    data = d.parts.get(part)
    if not isinstance(data, bytes) or len(data) < 5:
        return
    schema_id = rng.choice([*d.corpus.schema_ids, 0, 9_999, 2**31, 2**32 - 1])
    d.parts[part] = data[:1] + schema_id.to_bytes(4, "big") + data[5:]


def _avro_magic(d: Draft, rng: random.Random) -> None:
    part = rng.choice(["value", "key"])
    data = d.parts.get(part)
    if isinstance(data, bytes) and data:
        d.parts[part] = bytes([rng.choice([1, 0xFF, 0x7B])]) + data[1:]


def _varint_bomb(d: Draft, rng: random.Random) -> None:
    data = d.parts.get("value")
    if not isinstance(data, bytes) or not data:
        return
    start = 5 if d.seed.kind == "avro" else 0
    at = rng.randrange(min(start, len(data)), len(data) + 1)
    bomb = rng.choice(_BOMBS)
    keep = at + (len(bomb) if rng.random() < 0.5 else 0)  # overwrite, or insert
    d.parts["value"] = data[:at] + bomb + data[keep:]


# -- the message -------------------------------------------------------------------------------


def _swap_key_value(d: Draft, rng: random.Random) -> None:
    d.parts["key"], d.parts["value"] = d.parts["value"], d.parts["key"]


def _null_key(d: Draft, rng: random.Random) -> None:
    d.parts["key"] = rng.choice([None, b""])


def _tombstone(d: Draft, rng: random.Random) -> None:
    d.parts["value"] = rng.choice([None, None, b""])


def _junk_headers(d: Draft, rng: random.Random) -> None:
    key = d.parts.get("key") or b"{}"
    change = rng.randrange(5)
    if change == 0:
        for i in range(rng.choice([100, 500, 3000])):
            d.add_header(f"x-h{i}", b"v" * 20, parse=False)
    elif change == 1:  # past max_key_bytes in all: refused by size
        d.add_header("__debezium.oldkey", b'{"a":"' + b"k" * 70_000 + b'"}', parse=False)
    elif change == 2:
        d.add_header(rng.choice(["__debezium.oldkey", "__debezium.newkey"]), None, parse=False)
    elif change == 3:
        name = rng.choice(["__DEBEZIUM.OLDKEY", "__debezium.oldkey ", "", "\u00e9\U0001f600", "__debezium"])
        d.add_header(name, rng.choice([key, b"\xff", b""]), parse=False)
    else:
        d.add_header(rng.choice(["__debezium.oldkey", "__debezium.newkey"]), rng.randbytes(20), parse=False)


def _dup_header(d: Draft, rng: random.Random) -> None:
    if d.header_names:
        i = rng.randrange(len(d.header_names))
        d.add_header(d.header_names[i], d.parts[f"h{i}"], parse=False)
    else:
        key = d.parts.get("key")
        d.add_header("__debezium.oldkey", key, parse=False)
        d.add_header("__debezium.newkey", key, parse=False)


def _other_topic(d: Draft, rng: random.Random) -> None:
    d.topic = rng.choice(d.corpus.topics)


def _m(
    name: str, stage: int, kinds: frozenset[Kind], weight: float, fn: Callable[[Draft, random.Random], None]
) -> Mutation:
    return Mutation(name, stage, kinds, weight, fn)


WIRE_MUTATIONS = [
    _m("avro_value", STRUCT, _BINARY, 8, _avro_value),
    _m("avro_debezium", STRUCT, _AVRO, 3, _avro_debezium),
    _m("newer_version", STRUCT, _STRUCTURED, 3, _newer_version),
    _m("native_payload", STRUCT, frozenset({"native"}), 3, _native_payload),
    _m("truncate", BYTES, _ALL, 2, _truncate),
    _m("flip_bytes", BYTES, _ALL, 3, _flip_bytes),
    _m("invalid_utf8", BYTES, _ALL, 2, _invalid_utf8),
    _m("control_bytes", BYTES, _ALL, 1.5, _control_bytes),
    _m("slice_bytes", BYTES, _ALL, 1.5, _slice_bytes),
    _m("framing", BYTES, _ALL, 1, _framing),
    _m("avro_schema_id", BYTES, _AVRO, 2, _avro_schema_id),
    _m("avro_magic", BYTES, _AVRO, 0.5, _avro_magic),
    _m("varint_bomb", BYTES, _BINARY, 3, _varint_bomb),
    _m("swap_key_value", MESSAGE, _ALL, 0.7, _swap_key_value),
    _m("null_key", MESSAGE, _ALL, 0.7, _null_key),
    _m("tombstone", MESSAGE, _ALL, 0.5, _tombstone),
    _m("junk_headers", MESSAGE, _ALL, 1, _junk_headers),
    _m("dup_header", MESSAGE, _ALL, 0.7, _dup_header),
    _m("other_topic", MESSAGE, _ALL, 0.7, _other_topic),
]
