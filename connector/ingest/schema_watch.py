"""Source schema changes against the mapping, reported when first seen (issue 20).

Ingest hands every source message to ``SchemaWatch.observe`` before decoding it. A schema is
checked against the mapping (``connector.mapping.schema_check``) the first time it is seen, so a
dropped or retyped column that a mapping reads is reported at once: an error log line naming
the table, the column and the problem, the gauge
``carecloud_source_schema_mismatch{table,column,problem}`` at 1 (back to 0 when a later schema
of the table fits again), and ``status``, which runs the same check on each source topic's
newest message (``check_topic_tails``). Added columns are nothing to report: unmapped columns
are ignored until someone maps them.

What "first seen" costs per message, by format:

- Debezium JSON with schemas: the schema block is the message's prefix and identical in every
  message of a table, so a message that starts with the topic's last schema prefix is done
  after one ``bytes.startswith``; another prefix is split out and looked up among the schemas
  already checked;
- Debezium Avro: the schema id (bytes 1-4) compared with the topic's last; a new id is fetched
  from the Schema Registry once (the Avro subject's new version) and checked;
- Debezium JSON without schemas: there is no schema to see, so the row's column names are
  checked on the first message of each topic and then one message in ``SAMPLE_EVERY``: a drop
  is reported within that many messages of the table, and types are not known.

A verdict applies in the source's order (``SourceColumns.order``: ``source.ts_ms`` for JSON,
the registry id for Avro), so an old schema read late from a lagging partition does not undo a
newer one's verdict (docs/decisions/0024).

The watch never decides a message's fate: whatever goes wrong inside it (the registry away, a
value it cannot read) is logged once per topic and cause and the message goes on to the decoder,
which dead-letters what is bad. Native-envelope topics carry entities, not source rows: skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, Final, Protocol

from connector.mapping.schema_check import PROBLEMS, SchemaProblem, check_columns, resolve_table
from connector.mapping.spec import MappingSpec
from connector.source.avro import RegistrySchemas
from connector.source.schema_probe import (
    PAYLOAD_SEPARATOR,
    WRAPPED_PREFIX,
    SourceColumns,
    avro_columns,
    json_columns,
    json_order,
    wrapped_schema,
)

__all__ = ["SAMPLE_EVERY", "SchemaMetrics", "SchemaWatch", "check_topic_tails"]

log = logging.getLogger(__name__)

SAMPLE_EVERY: Final = 100
"""Schemaless JSON: one message in this many of a topic has its columns checked."""
_SEEN_LIMIT: Final = 4096
"""Schemas remembered as checked; beyond it the memory starts again (a re-check is harmless)."""
_Verdict = tuple[str, tuple[SchemaProblem, ...]] | None


class SchemaMetrics(Protocol):
    """The part of ``connector.ops.metrics.Metrics`` the watch sets."""

    def set_schema_mismatch(self, table: str, column: str, problem: str, present: bool) -> None: ...


class SchemaWatch:
    """Checks each source schema against the mapping the first time a message shows it."""

    def __init__(
        self,
        spec: MappingSpec,
        *,
        metrics: SchemaMetrics | None = None,
        registry: RegistrySchemas | None = None,
        registry_url: str | None = None,
        sample_every: int = SAMPLE_EVERY,
    ) -> None:
        self._spec = spec
        self._sample_every = sample_every
        """Schemaless JSON: check one message in this many (1: each, as ``check_topic_tails`` does)."""
        self._formats = {name: spec.topic(name).format for name in spec.topics}
        if registry is None and registry_url and "debezium-avro" in self._formats.values():
            registry = RegistrySchemas(url=registry_url)
        self._registry = registry
        self._metrics = metrics
        self._prefix: dict[str, bytes] = {}
        """Topic -> the schema-wrapped prefix of its last message (``{"schema":...,"payload":``)."""
        self._last_id: dict[str, int] = {}
        self._verdicts: dict[tuple[str, bytes | int], _Verdict] = {}
        """(topic, schema block or id) -> its verdict, judged once: the schemas already seen."""
        self._counts: dict[str, int] = {}
        self._failed: set[tuple[str, str]] = set()
        self._columns: dict[str, set[str]] = {}
        """Mapped table -> every column its checked schemas have had (a same-name column the
        mapping reads by default is reported as dropped only after it has been seen)."""
        self._order: dict[str, int] = {}
        """Mapped table -> the order (``SourceColumns.order``) of the schema its verdict is from."""
        self.problems: dict[str, tuple[SchemaProblem, ...]] = {}
        """Mapped table -> what its latest checked schema lacks (empty: it fits)."""
        if metrics is not None:
            # Every mapped column's series exists from the start, at 0: a scrape then shows
            # what the alert watches, and a typo in the alert's metric name fails the ops test.
            for table in spec.tables.values():
                for column in sorted({c for field in table.fields for c in field.columns}):
                    for problem in PROBLEMS:
                        metrics.set_schema_mismatch(table.table, column, problem, False)

    def observe(self, topic: str, value: bytes | None) -> None:
        """Check ``value``'s schema if this is the first message showing it; never raises."""
        if value is None:
            return
        fmt = self._formats.get(topic)
        try:
            if fmt == "debezium-json":
                self._json(topic, value)
            elif fmt == "debezium-avro" and self._registry is not None:
                self._avro(topic, value)
        except Exception as exc:  # the decoder judges the message; the watch only looks
            cause = (topic, type(exc).__name__)
            if cause not in self._failed:
                self._failed.add(cause)
                log.warning(
                    "source schema not checked; the message goes on to the decoder",
                    extra={"topic": topic, "error": cause[1]},
                )

    def current(self) -> list[SchemaProblem]:
        """Every problem of every table's latest checked schema."""
        return [p for problems in self.problems.values() for p in problems]

    def _json(self, topic: str, value: bytes) -> None:
        last = self._prefix.get(topic)
        if last is not None and value.startswith(last):
            return
        schema = wrapped_schema(value)
        if schema is None:
            n = self._counts.get(topic, 0)
            self._counts[topic] = n + 1
            if n % self._sample_every == 0:
                columns = json_columns(value)
                self._apply(topic, self._judge(topic, columns), columns)
            return
        self._prefix[topic] = value[: len(WRAPPED_PREFIX) + len(schema) + len(PAYLOAD_SEPARATOR)]
        key = (topic, schema)
        if key in self._verdicts:  # seen before: only where it stands in time is new
            self._apply(topic, self._verdicts[key], None, json_order(value))
            return
        columns = json_columns(value)
        self._apply(topic, self._remember(key, self._judge(topic, columns)), columns)

    def _avro(self, topic: str, value: bytes) -> None:
        if (
            len(value) >= 5
            and value[0] == 0
            and self._last_id.get(topic) == int.from_bytes(value[1:5], "big")
        ):
            return
        assert self._registry is not None
        schema_id, columns = avro_columns(value, self._registry)
        self._last_id[topic] = schema_id
        key = (topic, schema_id)
        if key in self._verdicts:
            self._apply(topic, self._verdicts[key], None, schema_id)
            return
        self._apply(topic, self._remember(key, self._judge(topic, columns)), columns)

    def _remember(self, key: tuple[str, bytes | int], verdict: _Verdict) -> _Verdict:
        if len(self._verdicts) >= _SEEN_LIMIT:
            self._verdicts.clear()
        self._verdicts[key] = verdict
        return verdict

    def _judge(self, topic: str, columns: SourceColumns | None) -> _Verdict:
        """(mapped table, its problems under this schema), or None when it is no mapped table's."""
        if columns is None:
            return None
        table = resolve_table(self._spec, columns.table, columns.record, topic)
        if table is None:
            return None  # not a mapped table: its events are dead-lettered as unknown_table
        seen = self._columns.setdefault(table.table, set())
        found = check_columns(table, columns.columns, typed=columns.typed, seen=seen)
        seen.update(columns.columns)
        return table.table, tuple(found)

    def _apply(
        self, topic: str, verdict: _Verdict, columns: SourceColumns | None, order: int | None = None
    ) -> None:
        """Make ``verdict`` the table's, unless the schema it is from is older than the one the
        table's verdict is from (a backlog across partitions shows old schemas late)."""
        if verdict is None:
            return
        table, found = verdict
        if columns is not None:
            order = columns.order
        latest = self._order.get(table)
        if order is not None:
            if latest is not None and order < latest:
                return
            self._order[table] = order
        before = self.problems.get(table, ())
        if set(found) == set(before):
            return
        self.problems[table] = found
        for p in found:
            if p not in before:
                log.error(
                    "a source schema no longer fits the mapping: %s",
                    p.describe(),
                    extra={"topic": topic, "table": p.table, "what": p.column, "reason": p.problem},
                )
                self._set(p, True)
        for p in before:
            if p not in found:
                log.warning(
                    "a source schema fits the mapping again",
                    extra={"topic": topic, "table": p.table, "what": p.column, "reason": p.problem},
                )
                self._set(p, False)

    def _set(self, p: SchemaProblem, present: bool) -> None:
        if self._metrics is not None:
            self._metrics.set_schema_mismatch(p.table, p.column, p.problem, present)


def check_topic_tails(
    client_config: Mapping[str, Any],
    spec: MappingSpec,
    *,
    registry_url: str | None = None,
    topics: Iterable[str] | None = None,
    timeout_s: float = 10.0,
) -> list[SchemaProblem]:
    """The mapping checked against the newest message of every partition of each source topic
    (what ``status`` shows): read-only, no consumer group, one message per partition at most."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    from connector.errors import TransientError

    watch = SchemaWatch(spec, registry_url=registry_url, sample_every=1)
    wanted = sorted(topics if topics is not None else spec.topics)
    consumer = Consumer({**client_config, "group.id": "carecloud-status-schema", "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(timeout=timeout_s)
        tails = []
        for topic in wanted:
            found = metadata.topics.get(topic)
            if found is None or found.error is not None:
                continue
            for partition in found.partitions:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=timeout_s
                )
                if high > low:
                    tails.append(TopicPartition(topic, partition, high - 1))
        consumer.assign(tails)
        remaining = {(tp.topic, tp.partition) for tp in tails}
        newest: list[tuple[int, str, bytes | None]] = []
        while remaining:
            msg = consumer.poll(timeout_s)
            if msg is None:
                break  # a partition whose last offset is a transaction marker has nothing to read
            if msg.error() is not None:
                continue
            newest.append((msg.timestamp()[1], msg.topic() or "", msg.value()))
            remaining.discard((msg.topic() or "", msg.partition() or 0))
        # Oldest first, so each table ends at the schema of its newest message over all partitions.
        for _, topic, value in sorted(newest, key=lambda m: m[0]):
            watch.observe(topic, value)
    except KafkaException as exc:
        raise TransientError(f"cannot read the source topics' newest messages: {exc}") from None
    finally:
        consumer.close()
    return watch.current()
