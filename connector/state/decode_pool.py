"""Decode and map on other cores: the per-event CPU work of ingest, moved out of the loop.

Decoding and mapping are pure (bytes in, an ``EntityChange`` or a reason out) and take about
half of the ingest's per-event time; everything that touches the transaction, the local store
or the counters stays in the ingest loop. So the loop hands each consumed batch to worker
processes in chunks, in order, and applies the results as they come back, while the workers
decode the chunks behind: the loop's own work and the decoding overlap on two cores. Measured
in docs/benchmarks.md ("decode workers"); the choice and what it costs in docs/decisions/0006.

- Order is kept: chunk ``i`` goes to worker ``i % n`` and results are read back in chunk order.
- At most ``_IN_FLIGHT`` chunks per worker are outstanding, so neither side blocks on a full
  pipe while the other waits for it.
- A worker reports, per message, the change, ``None`` (a tombstone), or why it is bad input
  (``BadInputError``'s class name and reason: never the value) or a transient failure (the
  Schema Registry away); the loop dead-letters, counts, or aborts and backs off exactly as it
  does when it decodes in-line (``decode_workers = 0``).
- Workers are started with ``spawn`` (the process already runs librdkafka's threads, which a
  ``fork`` would copy half-way) and end when their pipe closes, so a killed ingest leaves none.
  A worker that dies is a ``TerminalError``: the process exits and its restart resumes from the
  committed offsets; nothing decoded in a worker outlives the batch.
"""

from __future__ import annotations

import multiprocessing
import pickle
import queue
import threading
from collections.abc import Generator, Mapping, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Final

import orjson

from connector.errors import BadInputError, TerminalError, TransientError
from connector.mapping import MappingSpec
from connector.mapping.change import EntityChange
from connector.mapping.mapper import Mapper
from connector.source import Position
from connector.source.decoders import Decoder, make_decoder
from connector.source.exceptions import SchemaRegistryUnavailable
from connector.source.version import Version
from connector.state.codec import json_default

__all__ = [
    "DecodePool",
    "Decoded",
    "Item",
    "decode_items",
    "decode_one",
    "from_wire",
    "make_decoders",
    "to_wire",
    "transient_error",
]

Item = tuple[str, int, int, bytes | None, bytes | None, list[tuple[str, bytes | None]] | None]
"""What a worker needs of one message: topic, partition, offset, key, value, headers."""
Decoded = EntityChange | tuple[str, str, str] | None
"""A change; ``None`` for a tombstone; ``("bad", error class, reason)`` or
``("transient", error class, message)``."""

_CHUNK: Final = 250  # events per message to a worker: large enough to amortise a pipe round trip
_IN_FLIGHT: Final = 2  # chunks outstanding per worker


def make_decoders(spec: MappingSpec, options: Mapping[str, Mapping[str, Any]]) -> dict[str, Decoder]:
    """One decoder per source topic, from the per-topic decoder options."""
    return {name: make_decoder(spec.topic(name).format, **options[name]) for name in sorted(spec.topics)}


def decode_one(decoders: Mapping[str, Decoder], mapper: Mapper, item: Item) -> Decoded:
    """Decode and map one message; bad input becomes a value (its class and reason), a
    transient failure is raised as it is."""
    topic, partition, offset, key, value, headers = item
    try:
        event = decoders[topic].decode(key, value, headers, Position(topic, partition, offset))
        return None if event is None else mapper.map(event)
    except BadInputError as exc:
        return ("bad", type(exc).__name__, exc.reason)


def decode_items(decoders: Mapping[str, Decoder], mapper: Mapper, items: Sequence[Item]) -> list[Decoded]:
    """A worker's chunk: a transient failure becomes a value too, so the ingest loop can raise
    it where it would have met it in-line (``transient_error``)."""
    out: list[Decoded] = []
    append = out.append
    for item in items:
        try:
            append(decode_one(decoders, mapper, item))
        except TransientError as exc:
            append(("transient", type(exc).__name__, str(exc)))
    return out


def to_wire(results: Sequence[Decoded]) -> bytes:
    """A worker's results as one JSON document.

    Not pickle: pickling an ``EntityChange`` with its decimals, dates and timestamps cost about
    as much as decoding it (12.6 µs out and 15.9 µs back per event against 29 µs to decode and
    map; docs/benchmarks.md). The values are written exactly as ``encode_row`` writes them
    (same encoder, same ``default``), and the ingest only copies values into rows it encodes
    again, so the text forms that come back become the same state bytes as the typed values
    would have (a test compares the two paths byte for byte).
    """
    out: list[Any] = []
    append = out.append
    for r in results:
        if r is None or type(r) is tuple:
            append(r)
        else:
            assert isinstance(r, EntityChange)
            append(
                (
                    r.entity,
                    r.entity_id,
                    r.deleted,
                    tuple(r.version),
                    r.values,
                    sorted(r.missing) if r.missing else None,
                    r.previous_entity_id,
                    r.next_entity_id,
                )
            )
    return orjson.dumps(out, default=json_default)


def from_wire(data: bytes) -> list[Decoded]:
    """``to_wire``'s inverse, with values left in their JSON text forms (see there)."""
    out: list[Decoded] = []
    append = out.append
    empty: frozenset[str] = frozenset()
    for r in orjson.loads(data):
        if r is None:
            append(None)
        elif len(r) == 3:
            append((r[0], r[1], r[2]))
        else:
            entity, entity_id, deleted, version, values, missing, previous, nxt = r
            append(
                EntityChange(
                    entity,
                    entity_id,
                    deleted,
                    Version(*version),
                    values,
                    frozenset(missing) if missing else empty,
                    previous,
                    nxt,
                )
            )
    return out


def transient_error(error: str, message: str) -> TransientError:
    """The transient failure a worker reported, as the type the ingest loop would have seen."""
    kind = SchemaRegistryUnavailable if error == SchemaRegistryUnavailable.__name__ else TransientError
    return kind(message)


def _serve(conn: Connection, spec: MappingSpec, options: Mapping[str, Mapping[str, Any]]) -> None:
    """A worker's life: decode chunks until the ingest closes the pipe (or dies)."""
    decoders, mapper = make_decoders(spec, options), Mapper(spec)
    # Requests are read on their own thread: a chunk is larger than a pipe's buffer, so a worker
    # blocked writing results while the ingest is blocked writing the next chunk would deadlock.
    requests: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()

    def read() -> None:
        try:
            while True:
                requests.put(conn.recv_bytes())
        except (EOFError, OSError):
            requests.put(None)

    threading.Thread(target=read, name="requests", daemon=True).start()
    while (data := requests.get()) is not None:
        try:
            conn.send_bytes(to_wire(decode_items(decoders, mapper, pickle.loads(data))))
        except OSError:  # the ingest is gone
            return


class DecodePool:
    """``workers`` decoding processes for one ingest service."""

    def __init__(self, workers: int, spec: MappingSpec, options: Mapping[str, Mapping[str, Any]]) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipes: list[Connection] = []
        self._procs: list[BaseProcess] = []
        for i in range(workers):
            ours, theirs = context.Pipe()
            proc = context.Process(
                target=_serve, args=(theirs, spec, options), name=f"decode-{i}", daemon=True
            )
            proc.start()
            theirs.close()
            self._pipes.append(ours)
            self._procs.append(proc)

    def decode(self, items: Sequence[Item]) -> Generator[Decoded]:
        """The results for ``items``, in order, computed by the workers as the caller consumes
        them. The caller must exhaust the iterator (or close it) before the next call."""
        chunks = [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]
        window = len(self._pipes) * _IN_FLIGHT
        sent = received = 0
        try:
            while received < len(chunks):
                while sent < len(chunks) and sent < received + window:
                    self._send(sent, chunks[sent])
                    sent += 1
                results = self._receive(received)
                received += 1
                yield from results
        finally:
            while received < sent:  # an abandoned batch: read what is still out, keep pipes in step
                self._receive(received)
                received += 1

    def _send(self, i: int, chunk: Sequence[Item]) -> None:
        try:
            self._pipes[i % len(self._pipes)].send_bytes(pickle.dumps(chunk, protocol=5))
        except OSError:
            raise self._died(i) from None

    def _receive(self, i: int) -> list[Decoded]:
        try:
            results = from_wire(self._pipes[i % len(self._pipes)].recv_bytes())
        except (EOFError, OSError):
            raise self._died(i) from None
        return results

    def _died(self, i: int) -> TerminalError:
        proc = self._procs[i % len(self._procs)]
        proc.join(1)
        return TerminalError(f"decode worker {proc.name} died (exit code {proc.exitcode})")

    def close(self) -> None:
        for pipe in self._pipes:
            pipe.close()
        for proc in self._procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
        self._pipes.clear()
        self._procs.clear()
