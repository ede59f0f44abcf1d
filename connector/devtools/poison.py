"""Crafted messages that each stopped the ingest, or cost it seconds, before issue 16.

One place builds them for the integration test over the broker, ``bench/poison.py`` (the
CPU each costs) and the fuzzer's seeds. Each is made from a valid Debezium JSON create of the
Family table (``examples/mapping.yaml``), so everything else in it passes: what the ingest
meets is the crafted part alone. Each carries the dead-letter reason it must end with.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from connector.devtools.synthetic import SyntheticEvent

__all__ = ["Poison", "deep_json", "family_template", "poison_set"]


@dataclass(frozen=True, slots=True)
class Poison:
    """One crafted message and the dead letter it must become."""

    name: str
    reason: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    by_reference: bool = False
    """Whether the dead letter carries only the position (the bytes were the problem, or
    would not fit the dead-letter topic)."""


def family_template(events: Iterable[SyntheticEvent]) -> SyntheticEvent:
    """The first Family create (or snapshot read) of a synthetic stream: the poison's template."""
    for event in events:
        if event.topic.endswith(".family") and event.value and b'"op":"c"' in event.value:
            return event
    raise ValueError("the stream has no Family create: generate a larger one")


def deep_json(levels: int) -> bytes:
    """``{"a":{"a":...1...}}`` nested ``levels`` deep: past ``orjson.dumps``' 254, built as text."""
    return b'{"a":' * levels + b"1" + b"}" * levels


def _wrapped_last(payload: bytes, schema: bytes) -> bytes:
    """A schema-wrapped document with the schema second, so the split parse cannot take it."""
    return b'{"payload":' + payload + b',"schema":' + schema + b"}"


def poison_set(
    template_key: bytes,
    template_value: bytes,
    *,
    family_id: int,
    state_row_limit: int,
    key_limit: int,
    message_limit: int,
    dlq_limit: int,
) -> list[Poison]:
    """The poison classes of issue 16 for one Family create (``template_*``), under new ids
    from ``family_id`` on (so none touches a row the rest of a stream writes).

    ``state_row_limit`` is the largest state row the state topic takes, ``key_limit`` the
    ingest's ``max_key_bytes``, ``message_limit`` its ``max_message_bytes`` and ``dlq_limit``
    the largest record the dead-letter topic takes: the sizes are chosen against them.
    """
    doc = orjson.loads(template_value)
    key_column = next(iter(orjson.loads(template_key)))

    def event(fid: int, **changes: Any) -> tuple[bytes, bytes]:
        row = {**doc["after"], key_column: fid, **changes}
        return orjson.dumps({key_column: fid}), orjson.dumps({**doc, "after": row})

    out: list[Poison] = []
    fid = family_id
    key, value = event(fid)
    out.append(
        Poison(
            "deep schema, not first, in the value",
            "nesting_too_deep",
            key,
            _wrapped_last(value, deep_json(300)),
        )
    )
    fid += 1
    key, value = event(fid)
    deep_key = _wrapped_last(orjson.dumps({key_column: fid}), deep_json(300))
    out.append(Poison("deep schema, not first, in the key", "nesting_too_deep", deep_key, value))
    fid += 1
    key, value = event(fid)
    out.append(
        Poison(
            "deep __debezium.oldkey header",
            "nesting_too_deep",
            key,
            value,
            [("__debezium.oldkey", deep_json(300))],
        )
    )
    fid += 1
    decimal = base64.b64encode(b"\x7f" * 150_000).decode()  # 200 KB of base64
    key, value = event(fid, deductible=decimal)
    out.append(Poison("200 KB decimal", "decimal_out_of_range", key, value))
    fid += 1
    columns = {f"c{i}": i for i in range(100_000)}
    key, value = event(fid, plan_code=None, **columns)  # cost, then a plain refusal
    assert len(value) <= message_limit, "raise the message limit for the 100,000-column row"
    out.append(
        Poison(
            "100,000 columns", "required_field_null", key, value, by_reference=len(value) > dlq_limit - 1024
        )
    )
    fid += 1
    key, value = event(fid, family_name="x" * (state_row_limit + 1))
    assert len(value) <= message_limit, "the state-row case needs a message under the message limit"
    out.append(
        Poison("state row over the topic's limit", "state_row_too_large", key, value, by_reference=True)
    )
    fid += 1
    _, value = event(fid)
    huge_key = orjson.dumps({key_column: fid, "pad": "k" * max(2_000_000, key_limit + 1)})
    out.append(Poison("2 MB key", "oversized_key", huge_key, value, by_reference=True))
    return out
