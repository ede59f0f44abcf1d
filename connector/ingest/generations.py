"""Each source partition's snapshot generation, kept exactly with the consumed offsets.

The version of a streamed change is ``2 * G + 1`` where ``G`` is its source partition's
generation: the snapshot LSN of the newest initial snapshot (or re-snapshot) read seen in that
partition's log (``connector.source.version``, docs/decisions/0019). ``G`` is a property of the
log up to an offset, so it must move exactly with the consumed offsets:

- it travels as the offset metadata of ``send_offsets_to_transaction`` (``g=<G>``), committed
  in the same Kafka transaction as the rows the batch wrote, and is read back with the
  committed offsets when a partition is assigned (``load``);
- a batch works on a pending copy (``stamp``/``observe``) that becomes the committed one only
  when the transaction commits (``commit``); an aborted batch drops it (``abort``), so the batch
  consumed again meets the same generation: old-generation events re-stamped with a newer ``G``
  would outrank the re-snapshot's reads and regress rows;
- a partition with no committed offset (a new group, or offsets reset to the beginning) starts
  at 0 and recomputes ``G`` from the log as it reads it again. Offsets reset by hand to the
  middle of a log lose the metadata too: reset to the earliest offset, not into the middle.

``G`` only grows: a read redelivered from an older snapshot does not lower it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from confluent_kafka import TopicPartition

from connector.source.version import Version, snapshot_generation, with_generation

__all__ = ["METADATA_PREFIX", "Generations", "parse_metadata"]

log = logging.getLogger(__name__)

METADATA_PREFIX = "g="
"""The committed offset's metadata: ``g=<generation>``; empty (or absent) for generation 0."""


def parse_metadata(metadata: str | None) -> int:
    """The generation a committed offset's metadata holds; 0 for none. Anything else (another
    tool's metadata) is logged and read as 0, the order rows had before generations existed."""
    if not metadata:
        return 0
    text = metadata[len(METADATA_PREFIX) :] if metadata.startswith(METADATA_PREFIX) else ""
    if text.isascii() and text.isdigit() and len(text) <= 19 and int(text) < 2**63:
        return int(text)  # a snapshot LSN fits 63 bits (connector.source.version)
    log.warning("committed offset metadata is not a generation; reading generation 0")
    return 0


class Generations:
    """The generation of every source partition this consumer owns: committed and pending."""

    __slots__ = ("_committed", "_pending")

    def __init__(self) -> None:
        self._committed: dict[tuple[str, int], int] = {}
        self._pending: dict[tuple[str, int], int] = {}

    def get(self, topic: str, partition: int) -> int:
        """The generation at this point of the batch (pending, else committed)."""
        where = (topic, partition)
        found = self._pending.get(where)
        return self._committed.get(where, 0) if found is None else found

    def stamp(self, topic: str, partition: int, version: Version) -> Version:
        """``version`` in its partition's generation, after a snapshot read moved it (in log
        order, so a read opens its generation for the changes that follow it)."""
        generation = self.get(topic, partition)
        opened = snapshot_generation(version)
        if opened is None:
            return with_generation(version, generation)
        if opened > generation:
            self._pending[(topic, partition)] = opened
        return version

    def observe(self, topic: str, partition: int, phase: int) -> None:
        """The compiled path stamped the change itself (given ``get``); a read's phase still
        moves the generation."""
        if not phase & 1 and phase >> 1 > self.get(topic, partition):
            self._pending[(topic, partition)] = phase >> 1

    def metadata(self, topic: str, partition: int) -> str | None:
        """The offset metadata to commit with this partition's offset."""
        generation = self.get(topic, partition)
        return f"{METADATA_PREFIX}{generation}" if generation else None

    def offsets(self, next_offsets: Iterable[tuple[str, int, int]]) -> list[TopicPartition]:
        """``TopicPartition``s of ``(topic, partition, next offset)`` with their metadata."""
        out = []
        for topic, partition, offset in next_offsets:
            metadata = self.metadata(topic, partition)
            if metadata is None:
                out.append(TopicPartition(topic, partition, offset))
            else:
                out.append(TopicPartition(topic, partition, offset, metadata=metadata))
        return out

    def commit(self) -> None:
        """The batch's transaction committed: its generations are the partitions' now."""
        self._committed.update(self._pending)
        self._pending.clear()

    def abort(self) -> None:
        """The batch was aborted (and will be consumed again): forget what it moved."""
        self._pending.clear()

    def load(self, committed: Iterable[TopicPartition]) -> None:
        """Assigned partitions' generations from their committed offsets' metadata."""
        for tp in committed:
            self._committed[(tp.topic, tp.partition)] = parse_metadata(tp.metadata)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self._committed.pop((tp.topic, tp.partition), None)
            self._pending.pop((tp.topic, tp.partition), None)
