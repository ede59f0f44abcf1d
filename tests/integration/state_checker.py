"""After a fault run: read the whole state topic and judge it against an independent oracle.

Every fault test on the three-broker cluster ends here (issue 21, RELIABILITY rows 4 and 22).
``audit_state`` reads the state topic twice, read-uncommitted and read-committed, from offset 0
to the high watermark of every partition, and the dead-letter topic once, and reports what
breaks the invariants:

- **no transaction left open**: every partition's last stable offset equals its high
  watermark (the producers are closed by then, so a gap is a transaction nobody will finish);
- **nothing from an aborted transaction visible**: the read-committed log is the
  read-uncommitted log with some records left out, byte for byte at the same offsets; what is
  left out (``aborted``) is what aborted transactions wrote, reported (a transaction open at
  a leader's death may still commit, so none need be). If an aborted batch leaked next to its
  redone copy, the key would show the same row twice, which the next check catches;
- **versions never go backwards, nothing duplicated**: per key, in log order, each row's
  version is at least the previous one's; a row at the same version must differ (a field
  filled from an older event, a delete floor moved), so a byte-for-byte repeat of a row is a
  duplicate;
- **the final state is the oracle's**: the last row of every key, live and complete, equals
  the generator's expected record (values compared as the state's Python types), and no
  expected record is missing. The oracle is the synthetic generator's own model of the rows
  (``SyntheticStream.iter_expected``), never the connector's ``replay``, which runs the same
  decode-map-merge code as the ingest and would share its bugs;
- **no dead letter twice**: no two committed dead letters name the same source position.

Rows are decoded with ``connector.state.codec`` (bytes to values only; no decision of the
connector's is reused). Records whose key names no entity (the connector's own bookkeeping,
keys starting ``~``) are read but not judged.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, IsolationLevel, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from connector.model import ENTITY_NAMES
from connector.state.codec import decode_row, split_key
from connector.state.resolve import StateRow
from connector.state.topics import end_offsets

__all__ = ["StateAudit", "audit_state", "read_log"]

Expected = Iterable[tuple[str, str, Mapping[str, Any]]]
_SHOWN = 5


@dataclass
class StateAudit:
    """What ``audit_state`` found; ``problems`` empty means every invariant holds."""

    records: int = 0
    """Committed records of the state topic (every version of every key)."""
    aborted: int = 0
    """Records in the log that a read-committed reader did not get: written by aborted
    transactions (a fault inside an open transaction leaves some)."""
    live: int = 0
    dead_letters: int = 0
    problems: list[str] = field(default_factory=list)

    def assert_ok(self) -> None:
        assert not self.problems, "\n".join(self.problems)


def audit_state(
    config: Mapping[str, Any],
    state_topic: str,
    expected: Expected,
    *,
    dlq_topic: str | None = None,
) -> StateAudit:
    """Check every invariant of the module docstring; the caller asserts ``assert_ok()``."""
    audit = StateAudit()
    partitions = _partitions(config, state_topic)
    audit.problems += _open_transactions(config, state_topic, partitions)
    committed = read_log(config, state_topic, partitions, "read_committed")
    everything = read_log(config, state_topic, partitions, "read_uncommitted")
    audit.records, audit.aborted = len(committed), len(everything) - len(committed)
    audit.problems += _subsequence(committed, everything)
    latest = _versions_in_order(committed, audit.problems)
    live = {key: row for key, row in latest.items() if row is not None and row.complete}
    audit.live = len(live)
    audit.problems += _compare(live, expected)
    if dlq_topic is not None:
        audit.problems += _open_transactions(config, dlq_topic, _partitions(config, dlq_topic))
        letters = read_log(config, dlq_topic, _partitions(config, dlq_topic), "read_committed")
        audit.dead_letters = len(letters)
        audit.problems += _duplicate_dead_letters(letters)
    return audit


def read_log(config: Mapping[str, Any], topic: str, partitions: int, isolation: str) -> list[Message]:
    """Every record of ``topic`` up to each partition's end, in partition then log order;
    ``isolation`` is ``read_committed`` (up to the last stable offsets: an open transaction is
    reported, not waited for) or ``read_uncommitted`` (up to the high watermarks)."""
    level = (
        IsolationLevel.READ_COMMITTED if isolation == "read_committed" else IsolationLevel.READ_UNCOMMITTED
    )
    ends = end_offsets(AdminClient(dict(config)), topic, range(partitions), level)
    consumer = Consumer(
        {
            **config,
            "group.id": "state-checker",
            "enable.auto.commit": False,
            "isolation.level": isolation,
            "enable.partition.eof": True,
            "fetch.queue.backoff.ms": 10,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions) if ends[p] > 0])
    records: list[Message] = []
    reached = dict.fromkeys(range(partitions), 0)
    deadline = time.monotonic() + 120
    try:
        while any(reached[p] < ends[p] for p in range(partitions)):
            assert time.monotonic() < deadline, (
                f"reading {topic} ({isolation}) timed out at {reached} of {ends}"
            )
            for msg in consumer.consume(1000, 0.5):
                error, p = msg.error(), msg.partition() or 0
                if error is None:
                    records.append(msg)
                    reached[p] = max(reached[p], (msg.offset() or 0) + 1)
                elif error.code() == KafkaError._PARTITION_EOF:
                    reached[p] = max(reached[p], msg.offset() or 0)
                else:
                    raise KafkaException(error)
    finally:
        consumer.close()
    return sorted(records, key=lambda m: (m.partition() or 0, m.offset() or 0))


def _partitions(config: Mapping[str, Any], topic: str) -> int:
    meta = AdminClient(dict(config)).list_topics(topic=topic, timeout=30).topics[topic]
    if meta.error is not None:
        raise KafkaException(meta.error)
    return len(meta.partitions)


def _open_transactions(config: Mapping[str, Any], topic: str, partitions: int) -> list[str]:
    admin = AdminClient(dict(config))
    stable = end_offsets(admin, topic, range(partitions), IsolationLevel.READ_COMMITTED)
    high = end_offsets(admin, topic, range(partitions), IsolationLevel.READ_UNCOMMITTED)
    return [
        f"{topic}[{p}]: a transaction is open (last stable offset {stable[p]} < high watermark {high[p]})"
        for p in range(partitions)
        if stable[p] != high[p]
    ]


def _subsequence(committed: list[Message], everything: list[Message]) -> list[str]:
    """The committed records are records of the full log, the same bytes at the same offsets."""
    full = {(m.partition(), m.offset()): (m.key(), m.value()) for m in everything}
    wrong = [
        (m.partition(), m.offset())
        for m in committed
        if full.get((m.partition(), m.offset())) != (m.key(), m.value())
    ]
    if not wrong:
        return []
    return [f"{len(wrong)} committed records differ from the log at their offsets, e.g. {wrong[:_SHOWN]}"]


def _versions_in_order(
    committed: list[Message], problems: list[str]
) -> dict[tuple[str, str], StateRow | None]:
    """The last row per key, checking on the way that no key's version goes backwards and no
    row is written twice (a purge's tombstone, value None, ends a key's history)."""
    latest: dict[tuple[str, str], StateRow | None] = {}
    backwards: list[str] = []
    repeated: list[str] = []
    for msg in committed:
        key = split_key(msg.key() or b"")
        if key[0] not in ENTITY_NAMES:  # the connector's own bookkeeping ("~..." keys): not state
            continue
        value = msg.value()
        row = None if value is None else decode_row(key[0], value)
        before = latest.get(key)
        if row is not None and before is not None:
            where = f"{key[0]}/{key[1]} at {msg.partition()}:{msg.offset()}"
            if row.version < before.version:
                backwards.append(where)
            elif row == before:
                repeated.append(where)
        latest[key] = row
    if backwards:
        problems.append(f"{len(backwards)} rows older than the row before them: {backwards[:_SHOWN]}")
    if repeated:
        problems.append(f"{len(repeated)} rows written twice (duplicates): {repeated[:_SHOWN]}")
    return latest


def _compare(live: dict[tuple[str, str], StateRow], expected: Expected) -> list[str]:
    want = {(entity, entity_id): dict(values) for entity, entity_id, values in expected}
    missing = sorted(want.keys() - live.keys())
    extra = sorted(live.keys() - want.keys())
    differ = sorted(k for k in want.keys() & live.keys() if live[k].values != want[k])
    problems = []
    for what, keys in (("missing", missing), ("not expected", extra), ("with other values", differ)):
        if keys:
            problems.append(f"{len(keys)} live rows {what} (oracle: {len(want)}): {keys[:_SHOWN]}")
    return problems


def _duplicate_dead_letters(letters: list[Message]) -> list[str]:
    seen: set[tuple[bytes, ...]] = set()
    twice = []
    for msg in letters:
        headers = dict(msg.headers() or [])
        position = tuple(headers.get(f"carecloud.{h}") or b"" for h in ("topic", "partition", "offset"))
        if position in seen:
            twice.append(position)
        seen.add(position)
    return [f"{len(twice)} dead letters written twice: {twice[:_SHOWN]}"] if twice else []
