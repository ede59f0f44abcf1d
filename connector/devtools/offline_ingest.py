"""The ingest's handling of single messages, without Kafka: for the fuzzer and ``bench/poison.py``.

``IngestService.handle_message`` is the code the running service calls for every message
(size checks, the compiled or Python decode-and-map, the merge, the per-message barrier);
here it runs against a real local store in a temporary directory, and each message's result
is read back: applied (with the state rows it wrote), or the dead-letter reason. One message
at a time, committed at once, as if each were a batch of its own.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal

from connector.config import load_settings
from connector.ingest.batch import BatchView
from connector.ingest.service import IngestService
from connector.mapping import load_mapping
from connector.ops.metrics import Metrics
from connector.source import Position
from connector.state.store import PartitionStore

__all__ = ["MessageResult", "OfflineIngest"]


@dataclass(frozen=True, slots=True)
class MessageResult:
    """What one message did: ``reason`` None means applied (or stale, or a tombstone)."""

    reason: str | None
    rows: dict[bytes, bytes | None]
    """The state records it produced, by state key (empty for a dead letter)."""
    cpu_s: float
    """Thread CPU time spent handling it."""
    error: str | None = None
    """The exception class of a dead letter (``internal_error``'s tells which bug)."""


@dataclass
class _Collect:
    """An ``Emit`` that keeps what would have been produced to the state topic."""

    rows: dict[bytes, bytes | None] = field(default_factory=dict)

    def __call__(self, key: bytes, value: bytes | None) -> None:
        self.rows[key] = value

    def finish(self) -> None:
        """Nothing is held back offline."""


class OfflineIngest:
    """A mapping's ingest over one local store; use as a context manager (it owns a temp dir)."""

    def __init__(
        self,
        mapping_file: Path,
        *,
        fast_path: Literal["auto", "on", "off"] = "auto",
        max_message_bytes: int = 1_000_000,
        max_key_bytes: int = 65_536,
        state_row_limit: int = 1_000_000,
        schema_registry_url: str | None = None,
    ) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="offline-ingest-")
        settings = load_settings(
            kafka={"bootstrap_servers": "offline:9092"},  # never contacted: start() is not called
            ingest={
                "mapping_file": mapping_file,
                "state_dir": Path(self._dir.name),
                "fast_path": fast_path,
                "max_message_bytes": max_message_bytes,
                "max_key_bytes": max_key_bytes,
                "schema_registry_url": schema_registry_url,  # for debezium-avro topics
            },
        )
        self.service = IngestService(settings, load_mapping(mapping_file), metrics=Metrics())
        self.store = PartitionStore(Path(self._dir.name) / "p0")
        self.state_row_limit = state_row_limit
        self._offset = 0

    def handle(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> MessageResult:
        """Handle one message as the service would and commit its rows to the store."""
        collect = _Collect()
        view = BatchView(self.store, collect, int(time.time() * 1000), self.state_row_limit)
        position = Position(topic, 0, self._offset)
        self._offset += 1
        started = time.thread_time()
        cause = self.service.handle_message(key, value, headers, position, view)
        cpu = time.thread_time() - started
        if cause is not None:
            return MessageResult(cause.reason, {}, cpu, cause.error)
        if view.encoded:
            self.store.write(view.encoded, self._offset)
        return MessageResult(None, collect.rows, cpu)

    def close(self) -> None:
        self.store.close()
        self._dir.cleanup()

    def __enter__(self) -> OfflineIngest:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
