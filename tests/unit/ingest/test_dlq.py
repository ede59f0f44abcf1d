"""Dead letters read back: headers parsed, filters, what a replay forwards, nothing of the payload shown."""

from __future__ import annotations

import argparse
import datetime as dt

import pytest

from connector.ingest.commands import format_replay, parse_timestamp
from connector.ingest.dlq import (
    DeadLetter,
    DlqFilter,
    ReplayResult,
    Verdict,
    dead_letter_headers,
    from_message,
    replay,
    replay_headers,
    verdict,
)
from connector.source import Position

CANARY = b'{"family_name": "Quillfeather-Zanzibar"}'
T0 = dt.datetime(2026, 3, 8, 12, 0, tzinfo=dt.UTC)
SOURCES = frozenset({"src.family", "src.claim"})
"""The mapping's source topics in these tests."""


def letter(
    offset: int = 7,
    reason: str = "unknown_enum_symbol",
    *,
    by_reference: bool = False,
    topic: str = "src.family",
) -> DeadLetter:
    headers = [
        ("__debezium.newkey", b'{"id": 1}'),
        *dead_letter_headers(Position(topic, 2, 40 + offset), "MappingError", reason),
    ]
    key, value = (None, None) if by_reference else (b'{"family_id": 1}', CANARY)
    stamp = int((T0 + dt.timedelta(minutes=offset)).timestamp() * 1000)
    return from_message(0, offset, stamp, key, value, headers)


def test_ingest_headers_parse_back_into_the_original_position() -> None:
    got = letter()
    assert got.position == Position("src.family", 2, 47)
    assert (got.error, got.reason, got.dlq_offset) == ("MappingError", "unknown_enum_symbol", 7)
    assert got.timestamp == T0 + dt.timedelta(minutes=7)
    assert not got.by_reference
    assert letter(reason="oversized_record", by_reference=True).by_reference


def test_missing_or_garbled_headers_leave_no_position() -> None:
    assert from_message(0, 1, None, b"k", b"v", None).position is None
    garbled = from_message(0, 1, -1, b"k", b"v", [("carecloud.topic", b"t"), ("carecloud.partition", b"x")])
    assert garbled.position is None
    assert garbled.timestamp is None
    assert garbled.reason == "unknown"


def test_replay_forwards_the_original_headers_only() -> None:
    assert replay_headers(letter().headers) == [("__debezium.newkey", b'{"id": 1}')]


def test_payload_stays_out_of_repr_and_json() -> None:
    got = letter()
    for text in (repr(got), str(got.as_json())):
        assert "Quillfeather" not in text
        assert "family_id" not in text


@pytest.mark.parametrize(
    ("flt", "offsets"),
    [
        (DlqFilter(), [1, 2, 3, 4]),
        (DlqFilter(since=3), [3, 4]),
        (DlqFilter(from_time=T0 + dt.timedelta(minutes=2)), [2, 3, 4]),
        (DlqFilter(reasons=frozenset({"invalid_json"})), [2]),
        (DlqFilter(since=2, reasons=frozenset({"invalid_json", "unknown_enum_symbol"})), [2, 3]),
    ],
)
def test_filters(flt: DlqFilter, offsets: list[int]) -> None:
    letters = [
        letter(1),
        letter(2, "invalid_json"),
        letter(3),
        letter(4, "oversized_record", by_reference=True),
    ]
    assert [x.dlq_offset for x in letters if flt.matches(x)] == offsets


def test_a_naive_from_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        DlqFilter(from_time=dt.datetime(2026, 3, 8))  # noqa: DTZ001  (the point of the test)
    assert parse_timestamp("2026-03-08T04:00:00Z") == dt.datetime(2026, 3, 8, 4, tzinfo=dt.UTC)
    with pytest.raises(argparse.ArgumentTypeError, match="no UTC offset"):
        parse_timestamp("2026-03-08T04:00:00")
    with pytest.raises(argparse.ArgumentTypeError, match="not an ISO 8601"):
        parse_timestamp("yesterday")


def test_dry_run_counts_per_reason_skips_by_reference_and_replays_a_position_once() -> None:
    letters = [
        letter(1),
        letter(1),
        letter(2, "invalid_json"),
        letter(3, "oversized_record", by_reference=True),
    ]
    result = replay({}, letters, source_topics=SOURCES, dry_run=True)  # no producer: nothing leaves
    assert result.counts == {
        ("unknown_enum_symbol", "would_replay"): 1,
        ("unknown_enum_symbol", "duplicate"): 1,
        ("invalid_json", "would_replay"): 1,
        ("oversized_record", "skipped"): 1,
    }
    assert [x.dlq_offset for x in result.skipped] == [3]
    text = format_replay(result, letters, dry_run=True, topic="carecloud.dlq")
    assert ["src.family", "2", "41", "unknown_enum_symbol"] in [line.split() for line in text.splitlines()]
    assert "src.family[2]@43 (oversized_record): dead-lettered by reference, no bytes kept" in text
    assert "--since 4" in text
    assert "Quillfeather" not in text


def test_replay_report_shows_failures_by_position() -> None:
    result = ReplayResult()
    result.counts[("invalid_json", "failed")] += 1
    result.failed.append((letter(5, "invalid_json"), "_UNKNOWN_PARTITION"))
    text = format_replay(result, [letter(5, "invalid_json")], dry_run=False, topic="dlq")
    assert "failed: src.family[2]@45 (invalid_json): _UNKNOWN_PARTITION" in text
    assert text.splitlines()[0].split() == ["reason", "replayed", "skipped", "refused", "duplicate", "failed"]


@pytest.mark.parametrize(
    ("got", "expected"),
    [
        (letter(), Verdict.REPLAY),
        (letter(topic="src.claim"), Verdict.REPLAY),
        (letter(reason="oversized_record", by_reference=True), Verdict.SKIP),
        (from_message(0, 1, None, b"k", b"v", None), Verdict.SKIP),  # no position to go back to
        (letter(topic="carecloud.state"), Verdict.REFUSE),  # the connector's own topic
        (letter(topic="src.family.v2"), Verdict.REFUSE),
        (letter(topic="SRC.FAMILY"), Verdict.REFUSE),  # topic names are case-sensitive
        (letter(topic="src.family", reason="oversized_record", by_reference=True), Verdict.SKIP),
        (letter(topic="elsewhere", reason="oversized_record", by_reference=True), Verdict.REFUSE),
    ],
)
def test_only_a_source_topic_is_replayed_to(got: DeadLetter, expected: Verdict) -> None:
    assert verdict(got, SOURCES) is expected


def test_no_source_topics_refuse_every_positioned_dead_letter() -> None:
    assert verdict(letter(), frozenset()) is Verdict.REFUSE


def test_a_refused_dead_letter_is_counted_and_named_by_its_dlq_offset_only() -> None:
    foreign = "phi-export.FAM-CANARY-7f3a9"  # whatever a forged header says, it is not echoed
    letters = [letter(1), letter(2, topic=foreign), letter(3, "invalid_json", topic="carecloud.state")]
    result = replay({}, letters, source_topics=SOURCES, dry_run=True)
    assert result.counts == {
        ("unknown_enum_symbol", "would_replay"): 1,
        ("unknown_enum_symbol", "refused"): 1,
        ("invalid_json", "refused"): 1,
    }
    assert [x.dlq_offset for x in result.refused] == [2, 3]
    assert [x.dlq_offset for x in result.replayed] == [1]
    text = format_replay(result, letters, dry_run=True, topic="carecloud.dlq")
    assert "the carecloud.topic header names a topic that is not one of the mapping's source topics" in text
    assert "  dlq partition 0 offset 2 (unknown_enum_symbol)" in text.splitlines()
    assert "  dlq partition 0 offset 3 (invalid_json)" in text.splitlines()
    assert foreign not in text
    assert "carecloud.state" not in text
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines()[1:] if line.split()}
    assert rows["invalid_json"] == ["0", "0", "1", "0", "0"]
