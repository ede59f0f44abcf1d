"""Nesting and decimal bounds: a crafted message is refused by its rule, quickly, on every path."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import orjson
import pytest

from connector.devtools.offline_ingest import OfflineIngest
from connector.devtools.poison import deep_json, family_template
from connector.devtools.synthetic import generate
from connector.errors import DecodeError
from connector.source import DebeziumJsonDecoder, Position
from connector.source.limits import MAX_NESTING, check_nesting, nesting_exceeds

POS = Position("t", 0, 7)
PAYLOAD = (
    b'{"op":"c","before":null,"after":{"id":1},"source":{"connector":"postgresql","db":"d",'
    b'"schema":"public","table":"t","lsn":10,"sequence":"[null,\\"10\\"]","ts_ms":1}}'
)


def test_nesting_is_measured_not_guessed() -> None:
    assert not nesting_exceeds(orjson.loads(deep_json(MAX_NESTING)))
    assert nesting_exceeds(orjson.loads(deep_json(MAX_NESTING + 1)))
    # An empty container one level further is still taken, as the compiled parser takes it.
    assert not nesting_exceeds(orjson.loads(b"[" * (MAX_NESTING + 1) + b"]" * (MAX_NESTING + 1)))
    assert nesting_exceeds(orjson.loads(b"[" * (MAX_NESTING + 2) + b"]" * (MAX_NESTING + 2)))
    wide = {f"k{i}": [1, {"a": [2]}] for i in range(1000)}  # wide, shallow: fine
    assert not nesting_exceeds(wide)
    check_nesting(wide, 10**6, "value")  # many brackets, shallow: no error
    check_nesting(orjson.loads(deep_json(200)), 10, "value")  # few brackets claimed: not walked


@pytest.mark.parametrize(
    ("key", "value", "headers"),
    [
        (b'{"id":1}', b'{"payload":' + PAYLOAD + b',"schema":' + deep_json(300) + b"}", None),
        (b'{"id":1}', b'{"schema":' + deep_json(300) + b',"payload":' + PAYLOAD + b"}", None),
        (b'{"payload":{"id":1},"schema":' + deep_json(300) + b"}", PAYLOAD, None),
        (b'{"id":1}', PAYLOAD, [("__debezium.oldkey", deep_json(300))]),
        (b'{"id":1}', PAYLOAD, [("__debezium.newkey", deep_json(2000))]),  # past orjson's own 1024
        (
            b'{"id":1}',
            PAYLOAD.replace(b'"after":{"id":1}', b'"after":{"id":1,"x":' + deep_json(100) + b"}"),
            None,
        ),
    ],
    ids=["value schema second", "value schema first", "key schema", "oldkey header", "newkey 2000", "row"],
)
def test_deep_nesting_anywhere_is_a_dead_letter_by_rule(
    key: bytes, value: bytes, headers: list[tuple[str, bytes | None]] | None
) -> None:
    with pytest.raises(DecodeError) as caught:
        DebeziumJsonDecoder().decode(key, value, headers, POS)
    assert caught.value.reason == "nesting_too_deep"


def test_a_long_connect_decimal_is_refused_before_the_quadratic_conversion() -> None:
    huge = base64.b64encode(b"\x7f" * 150_000).decode()
    schema = {
        "type": "struct",
        "fields": [
            {"field": "after", "type": "struct", "fields": [
                {"field": "id", "type": "int64"},
                {"field": "amount", "type": "bytes", "name": "org.apache.kafka.connect.data.Decimal",
                 "parameters": {"scale": "2"}},
            ]},
        ],
    }  # fmt: skip
    payload = orjson.loads(PAYLOAD)
    payload["after"]["amount"] = huge
    value = orjson.dumps({"schema": schema, "payload": payload})
    started = time.process_time()
    with pytest.raises(DecodeError) as caught:
        DebeziumJsonDecoder().decode(b'{"id":1}', value, None, POS)
    assert caught.value.reason == "decimal_too_long"
    assert huge[:20] not in str(caught.value)
    assert time.process_time() - started < 5  # generous: the quadratic path took 4 s for this


def test_a_deep_json_text_column_read_by_path_is_a_dead_letter_by_rule() -> None:
    family = family_template(generate(20, seed=3))
    doc = orjson.loads(family.value or b"")
    doc["after"]["address"] = '{"state":"CA","x":' + deep_json(100).decode() + "}"
    mapping = Path(__file__).parents[3] / "examples" / "mapping.yaml"
    with OfflineIngest(mapping, fast_path="off") as ingest:
        result = ingest.handle(family.topic, family.key, orjson.dumps(doc))
    assert result.reason == "nesting_too_deep"
