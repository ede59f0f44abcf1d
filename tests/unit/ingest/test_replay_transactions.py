"""``replay`` over a capture that holds Debezium's transaction topic (issue 19): its BEGIN/END
records are tallied, never dead-lettered, and each transaction is judged whole or not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson

from connector.devtools.synthetic import SyntheticStream, generate
from connector.ingest.replay import RawMessage, replay
from connector.mapping import load_mapping
from connector.source import Position

MAPPING = load_mapping(Path(__file__).parents[3] / "examples" / "mapping.yaml")
BEGIN = orjson.dumps({"status": "BEGIN", "id": "1:30100000", "event_count": None, "data_collections": None})


def _capture(stream: SyntheticStream, *, drop: int | None = None) -> Iterator[RawMessage]:
    """The stream's messages, then its transaction topic (one BEGIN, every END); ``drop``: the
    number of one event of a transaction to leave out."""
    for n, msg in enumerate(stream.messages()):
        if n != drop:
            yield msg
    topic = stream.transaction_topic
    yield RawMessage(Position(topic, 0, 0), b'{"id":"1:30100000"}', BEGIN, None)
    for offset, end in enumerate(stream.transaction_ends(), 1):
        yield RawMessage(Position(topic, 0, offset), end.key, end.value, None)


def _multi_event_message(stream: SyntheticStream) -> tuple[int, str]:
    """The index of the first event whose transaction has several events, and its txId."""
    for n, msg in enumerate(stream.messages()):
        doc = orjson.loads(msg.value) if msg.value else None
        tx = doc.get("transaction") if isinstance(doc, dict) else None
        if isinstance(tx, dict) and tx["total_order"] > 1:
            return n, str(tx["id"]).split(":")[0]
    raise AssertionError("the stream has no multi-event transaction")


def test_the_transaction_topic_is_tallied_not_dead_lettered_and_every_transaction_is_whole() -> None:
    stream = generate(30, malformed=0)
    result = replay(MAPPING, _capture(stream))
    assert result.dead_letters == []
    tx = result.transactions
    assert (tx.begins, tx.ends) == (1, len(list(stream.transaction_ends())))
    assert tx.incomplete == []
    assert tx.complete == tx.ends


def test_a_transaction_missing_an_event_is_named() -> None:
    stream = generate(30, malformed=0)
    index, txid = _multi_event_message(stream)
    result = replay(MAPPING, _capture(stream, drop=index))
    assert result.transactions.incomplete == [txid]


def test_an_unlisted_transaction_topic_is_recognised_and_a_skipped_topic_is_not_read() -> None:
    stream = generate(5, malformed=0)
    # The mapping names no transactions.topic: the records are recognised by what they are.
    assert MAPPING.transaction_topic is None
    result = replay(MAPPING, _capture(stream), skip_topics=["benefits.public.provider"])
    assert result.dead_letters == []
    assert result.transactions.skipped > 0
    assert not any(entity == "Provider" for entity, _, _ in result.live)


def test_a_malformed_record_of_the_named_transaction_topic_is_a_dead_letter_by_reason() -> None:
    stream = generate(5, malformed=0)
    bad = RawMessage(Position("benefits.transaction", 1, 9), None, b'{"status":"END","id":"x"}', None)
    result = replay(MAPPING, [*_capture(stream), bad], transaction_topics=["benefits.transaction"])
    assert [(d.position, d.reason) for d in result.dead_letters] == [(bad.position, "bad_transaction_record")]
