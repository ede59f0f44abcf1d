"""The ingest's part of the re-snapshot sweep: the completion record and the positions.

A part of ``IngestService`` (``connector.ingest.service``), mixed into the message layer. What
the records mean and how the cut sweeps with them is in ``connector.state.sweep``
(docs/decisions/0019): when the Python path applies a PostgreSQL snapshot's ``last`` read,
``_snapshot_completed`` writes the source's completion record to that partition's state
partition, in the batch's transaction; ``emit_positions`` writes each consumed source
partition's next offset beside the batch's rows.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from confluent_kafka import Consumer, KafkaException, TopicPartition

from connector.errors import TransientError
from connector.ingest.batch import BatchView
from connector.ingest.generations import Generations
from connector.mapping import Mapper
from connector.source import Decoder
from connector.source.version import Version, snapshot_generation
from connector.state.sweep import Completion, completion_key, encode_completion, encode_position, position_key

__all__ = ["Resnapshots", "source_entities"]

log = logging.getLogger(__name__)

_WATERMARK_TIMEOUT_S = 30.0


def source_entities(mapper: Mapper, topics: list[str], source: str) -> tuple[list[str], tuple[str, ...]]:
    """(the source's topics, the entities only they feed), by Debezium's default topic names
    ``<source>.<schema>.<table>``: an entity one of whose tables comes through another topic
    (another source, or a renamed topic) is never swept."""
    prefix = source + "."
    mine = [t for t in topics if t.startswith(prefix)]
    tables = {t[len(prefix) :] for t in mine}
    fed: dict[str, bool] = {}
    for table in mapper.spec.tables.values():
        fed[table.entity] = fed.get(table.entity, True) and table.table in tables
    return mine, tuple(sorted(entity for entity, only in fed.items() if only))


class Resnapshots:
    """Writes the sweep's records (``connector.state.sweep``); the service sets the fields."""

    mapper: Mapper
    source_topics: list[str]
    decoders: dict[str, Decoder]
    generations: Generations
    _consumer: Consumer | None

    def _snapshot_completed(self, source: str, version: Version, view: BatchView, partition: int) -> None:
        """The snapshot's ``last`` read was applied: record its generation, the end offsets of
        the source's partitions now (every read of the snapshot lies below them) and the
        entities it alone feeds, in this batch's transaction."""
        generation = snapshot_generation(version)
        if not generation:
            return
        topics, entities = source_entities(self.mapper, self.source_topics, source)
        ends = self._end_offsets(topics)
        key = completion_key(source, partition)
        value = encode_completion(Completion(source, generation, ends, entities))
        view.encoded[key] = value
        view.emit(key, value)
        log.info(
            "initial snapshot complete; its generation recorded for the sweep",
            extra={"count": len(entities), "partitions": sum(len(p) for p in ends.values())},
        )

    def _end_offsets(self, topics: list[str]) -> dict[str, dict[int, int]]:
        """The high watermark of every partition of ``topics`` (none offline, without a consumer)."""
        consumer = self._consumer
        if consumer is None:
            return {}
        ends: dict[str, dict[int, int]] = {}
        try:
            meta = consumer.list_topics(timeout=_WATERMARK_TIMEOUT_S)
            for topic in topics:
                partitions = sorted(meta.topics[topic].partitions)
                ends[topic] = {
                    p: consumer.get_watermark_offsets(
                        TopicPartition(topic, p), timeout=_WATERMARK_TIMEOUT_S, cached=False
                    )[1]
                    for p in partitions
                }
        except (KafkaException, KeyError) as exc:
            raise TransientError(
                "cannot read the source topics' end offsets for the snapshot's completion"
            ) from exc
        return ends

    def emit_positions(self, views: Mapping[int, BatchView], last: Mapping[tuple[str, int], int]) -> None:
        """Each consumed source partition's next offset, to its state partition beside the rows
        (before the views finish, in the batch's transaction)."""
        for (topic, partition), offset in last.items():
            view = views.get(partition)
            if view is not None and topic in self.decoders:  # a source topic, not the transaction topic
                key, value = position_key(topic, partition), encode_position(offset + 1)
                view.encoded[key] = value  # the local store holds what the topic holds (a restore reads it)
                view.emit(key, value)
