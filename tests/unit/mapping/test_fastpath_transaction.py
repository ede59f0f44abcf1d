"""The compiled path hands back Debezium's transaction block as the Python path reads it
(contract 2, docs/decisions/0020): the ingest's transaction ledger takes either."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from connector.devtools.synthetic import generate
from connector.mapping import Mapper, load_mapping
from connector.mapping.fastpath import FastPath
from connector.source import Position, make_decoder

pytestmark = pytest.mark.fastpath

MAPPING = load_mapping(Path(__file__).parents[3] / "examples" / "mapping.yaml")


def test_the_transaction_block_of_every_mapped_event_is_the_python_paths() -> None:
    mapper = Mapper(MAPPING)
    fast = {topic: FastPath(mapper, topic) for topic in MAPPING.topics}
    decoder = make_decoder("debezium-json")
    with_block = 0
    for offset, event in enumerate(generate(30, malformed=0).events()):
        if event.value is None:
            continue
        position = Position(event.topic, 0, offset)
        quick = fast[event.topic].map(event.key, event.value, None, position)
        if quick is None:
            continue  # declined: the Python path maps it, block and all
        reference = decoder.decode(event.key, event.value, None, position)
        assert reference is not None
        tx = reference.transaction
        if tx is None:
            assert quick.transaction is None
            continue
        with_block += 1
        assert quick.transaction == (reference.table, tx.id, tx.data_collection_order)
    assert with_block > 100  # the streamed events: the fast path keeps them


def test_an_order_beyond_64_bits_is_declined_not_truncated() -> None:
    mapper = Mapper(MAPPING)
    topic = "benefits.public.provider"
    path = FastPath(mapper, topic)
    event = next(e for e in generate(5, malformed=0).events() if e.topic == topic and e.value)
    doc = orjson.loads(event.value or b"{}")
    doc["transaction"] = {"id": "7:8", "total_order": 1, "data_collection_order": 424242}
    value = orjson.dumps(doc).replace(b"424242", str(2**64).encode())
    assert path.map(event.key, value, None, Position(topic, 0, 1)) is None
