"""Offline replay: captured events through decode -> map -> resolve, in memory, no Kafka
(the ``replay`` command, ``connector.ingest.commands``).

The operator's mapping check before a deployment, and the reference the integration tests
compare the Kafka path with: both run the same decoders, mapper and merge, and compute each
partition's snapshot generation from the input's order, sweeping what a completed re-snapshot
did not read (docs/decisions/0019).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from connector.errors import ConfigError
from connector.ingest.barrier import dead_letter_cause
from connector.ingest.generations import Generations
from connector.ingest.replay_transactions import TransactionSummary, TransactionTally
from connector.ingest.resnapshot import source_entities
from connector.mapping import Mapper, MappingSpec
from connector.source import Decoder, Position, make_decoder
from connector.source.version import Version, predates, snapshot_generation
from connector.state import MemoryStore, StateRow, apply_change
from connector.state.carry import CarryOffer, receive

__all__ = ["DeadLetter", "ReplayResult", "encode_json", "read_events", "replay"]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Where a bad event was and why; never its content."""

    position: Position
    error: str
    reason: str

    def as_json(self) -> dict[str, Any]:
        p = self.position
        return {
            "topic": p.topic,
            "partition": p.partition,
            "offset": p.offset,
            "error": self.error,
            "reason": self.reason,
        }


@dataclass
class ReplayResult:
    """Live entities sorted by (entity, EntityId), and the dead letters in input order."""

    live: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    tombstones: int = 0
    stale: int = 0
    swept: int = 0
    """Rows a completed re-snapshot did not read (``connector.state.sweep``): left out."""
    transactions: TransactionSummary = field(default_factory=TransactionSummary)
    """The transaction topic's records and the events' transaction blocks (``replay_transactions``)."""
    rows: dict[tuple[str, str], StateRow] = field(default_factory=dict)
    """The live entities' state rows (with their source columns when kept), as ingest would
    store them: what the state preview reads (``mapping_diff.state_diff``)."""


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One captured Kafka message as the replay input describes it."""

    position: Position
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]] | None


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(type(value).__name__)


def encode_json(value: Any) -> bytes:
    """JSON with ISO dates and decimals as exact strings (never floats: this is money)."""
    return orjson.dumps(value, default=_json_default, option=orjson.OPT_SORT_KEYS)


def _payload(obj: dict[str, Any], name: str, line_no: int) -> bytes | None:
    if f"{name}_b64" in obj:
        encoded = obj[f"{name}_b64"]
        if encoded is None:  # null, as for ``value``: a tombstone
            return None
        problem = ConfigError(f"input line {line_no}: {name}_b64 is not base64")
        if not isinstance(encoded, str):
            raise problem
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise problem from None
    raw = obj.get(name)
    return None if raw is None else _reencoded(raw, f"input line {line_no}: {name}")


def _reencoded(value: Any, where: str) -> bytes:
    """JSON bytes of a parsed value, however deep the input line nested it.

    ``orjson.dumps`` stops at 254 levels, so a crafted event given as JSON (not ``_b64``)
    would end the replay with a traceback; the standard library goes as deep as the
    interpreter's recursion limit, and past that the line is refused by name.
    """
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        pass
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    except RecursionError:
        raise ConfigError(f"{where} is nested too deeply to re-encode; give it as base64 (_b64)") from None


def read_events(path: str | Path) -> Iterator[RawMessage]:
    """Parse the replay input: one JSON object per line (see the CLI help for the shape)."""
    source = Path(path)
    if not source.is_file():
        raise ConfigError(f"cannot read events file {source}: no such file")
    with source.open("rb") as lines:  # streamed: captures can be large
        for line_no, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
                position = Position(str(obj["topic"]), int(obj.get("partition", 0)), int(obj["offset"]))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                raise ConfigError(
                    f"input line {line_no}: expected a JSON object with topic, partition, offset, key, value"
                ) from None
            raw_headers = obj.get("headers") or {}
            if not isinstance(raw_headers, dict):
                raise ConfigError(f"input line {line_no}: headers must be an object {{name: JSON value}}")
            headers = [
                (str(k), None if v is None else _reencoded(v, f"input line {line_no}: header {k}"))
                for k, v in raw_headers.items()
            ]
            yield RawMessage(
                position, _payload(obj, "key", line_no), _payload(obj, "value", line_no), headers or None
            )


def _completed(
    completions: dict[str, tuple[int, tuple[str, ...]]],
    source: str,
    version: Version,
    mapper: Mapper,
    topics: list[str],
) -> None:
    """A snapshot's ``last`` read: its generation sweeps the source's entities (as the cut does,
    with the whole input read: no end offsets to wait for)."""
    generation = snapshot_generation(version)
    if generation:
        completions[source] = (generation, source_entities(mapper, topics, source)[1])


def replay(
    spec: MappingSpec,
    messages: Iterable[RawMessage],
    *,
    schema_registry_url: str | None = None,
    transaction_topics: Collection[str] = (),
    skip_topics: Collection[str] = (),
    source_columns: bool = False,
) -> ReplayResult:
    """Run the messages through the same decode -> map -> merge as the Kafka path.

    Records of Debezium's transaction topic (the mapping's ``transactions.topic``, the
    ``transaction_topics`` named, or recognised as BEGIN/END) are tallied, not decoded as row
    changes; messages of ``skip_topics`` are skipped (``replay_transactions``). ``source_columns``:
    rows keep their merged source columns, as ingest's do by default (decision 0025)."""
    mapper = Mapper(spec, source_columns=source_columns)
    tally = TransactionTally(spec, transaction_topics=transaction_topics, skip_topics=skip_topics)
    decoders: dict[str, Decoder] = {}
    stores: dict[int, MemoryStore] = {}  # as in ingest: state partition p holds source partition p
    last_position: dict[tuple[int, str, str], Position] = {}
    offers: list[CarryOffer] = []  # primary-key updates' carry offers (connector.state.carry)
    result = ReplayResult()
    generations = Generations()  # as the ingest's: each partition's, in the input's order
    completions: dict[str, tuple[int, tuple[str, ...]]] = {}
    topics = sorted(spec.topics)
    for msg in messages:
        topic = msg.position.topic

        def refused(exc: Exception, position: Position = msg.position) -> None:
            cause = dead_letter_cause(exc)
            assert cause is not None  # a DecodeError always has one
            result.dead_letters.append(DeadLetter(position, cause.error, cause.reason))

        if tally.boundary(msg.position, msg.value, refused):
            continue
        decoder = decoders.get(topic)
        if decoder is None:
            settings = spec.topic(topic)
            options: dict[str, Any] = {"unavailable_placeholder": settings.unavailable_placeholder}
            if settings.format != "debezium-json" and schema_registry_url:
                options["schema_registry_url"] = schema_registry_url
            decoder = decoders[topic] = make_decoder(settings.format, **options)
        partition = msg.position.partition
        store = stores.get(partition)
        if store is None:
            store = stores[partition] = MemoryStore()
            for offer in offers:  # what the carry topic would have brought this partition
                receive(store, offer)
        try:  # the ingest's per-message barrier (connector.ingest.barrier): a dead letter, not a stop
            event = decoder.decode(msg.key, msg.value, msg.headers, msg.position)
            if event is None:
                result.tombstones += 1
                continue
            event.version = generations.stamp(topic, partition, event.version)
            if event.snapshot_end is not None:
                _completed(completions, event.snapshot_end, event.version, mapper, topics)
            change = mapper.map(event)
            if apply_change(store, change).value == "stale":
                result.stale += 1
            for offer in store.offers:  # ingest sends them through the carry topic to every partition
                offers.append(offer)
                for each in stores.values():
                    receive(each, offer)
            store.offers.clear()
            tally.event(event, change)
        except BaseException as exc:
            cause = dead_letter_cause(exc)
            if cause is None:
                raise
            result.dead_letters.append(DeadLetter(msg.position, cause.error, cause.reason))
            continue
        last_position[(partition, change.entity, change.entity_id)] = msg.position
    # A key in several partitions resolves by version, as the snapshot's reader does.
    chosen: dict[tuple[str, str], tuple[StateRow, Position]] = {}
    for partition, store in sorted(stores.items()):
        for key, row in store.items():
            held = chosen.get(key)
            if held is None or row.version >= held[0].version:
                chosen[key] = (row, last_position[(partition, *key)])
    sweep: dict[str, int] = {}
    for generation, entities in completions.values():
        for entity in entities:
            sweep[entity] = max(sweep.get(entity, 0), generation)
    for (entity, entity_id), (row, position) in sorted(chosen.items(), key=lambda item: item[0]):
        if row.deleted:
            continue
        if entity in sweep and predates(row.version, sweep[entity]):
            result.swept += 1  # not read by the source's completed re-snapshot: deleted in the gap
            continue
        if row.missing:
            result.dead_letters.append(DeadLetter(position, "IncompleteRow", "toast_without_previous_value"))
            continue
        result.live.append((entity, entity_id, row.values))
        result.rows[(entity, entity_id)] = row
    result.transactions = tally.finish()
    return result
