"""The carry topic: primary-key updates' TOAST values, from the old key's partition to the new key's.

The transport for ``connector.state.carry``. A batch that applies a primary-key update's delete
sends the old row as an offer to *every* partition of the carry topic, in the batch's own
Kafka transaction (the sender cannot know which partition holds the new key: Debezium's
partitioner hashes its key bytes). The carry topic has as many partitions as the state topic
and is consumed with the source topics under the range assignor, so partition p's offers are
received by the replica that owns state partition p, in that replica's own transaction,
exactly once with its offsets.

Offers are rare (primary-key updates of rows with TOASTed columns), so one record per
partition per update costs nothing worth measuring.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from confluent_kafka import Producer

from connector.state.carry import CarryOffer, encode_offer

__all__ = ["send_offers"]


def send_offers(
    producer: Producer, topic: str, partitions: int, offers: Iterable[CarryOffer], limit: int | None = None
) -> int:
    """Produce each offer to every partition of ``topic``; returns the records produced.

    An offer carries the donor's source columns as well as its values, so it is about as large
    as the donor's state row, and its key is longer; one that would pass ``limit`` (the state
    row limit) with them is sent without them, as ``BatchView.put`` writes such a row: its
    values still fill the new row, whose source columns then keep their hole (the re-mapping
    pass counts it ``no_source``)."""
    sent = 0
    for offer in offers:
        key, value = encode_offer(offer)
        if limit is not None and len(key) + len(value) > limit and offer.source is not None:
            key, value = encode_offer(replace(offer, source=None))
        for partition in range(partitions):
            producer.produce(topic, value, key, partition=partition)
            sent += 1
    return sent
