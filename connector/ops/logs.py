"""Structured logs: one JSON object per line, context by allow-list, secrets scrubbed.

Every line has ``ts`` (UTC, RFC 3339, milliseconds), ``level``, ``logger`` and ``msg``, plus
context fields passed with ``extra={...}`` or set for a block with ``log_context(...)``::

    with log_context(topic="db.public.claim", partition=3):
        log.warning("dead letter", extra={"offset": 1042, "reason": "missing_row"})

The data is families' health claims, so what may be logged is decided here, not at each call:

- a context field is emitted only if its name is in ``ALLOWED_FIELDS`` (positions, entity
  *type* names, phases, counts, codes); any other field is dropped, and its *name* is listed
  under ``dropped`` so a developer sees it in tests. A record payload or an EntityId passed as
  ``extra={"record": ...}`` never reaches the output; ``entity`` must be one of the six names.
- values must be scalars (a dict or list could carry a record): others are dropped too.
- an exception's message is kept only for ``ConnectorError`` (whose messages name fields and
  positions by contract, see ``connector.errors``); any other exception logs its type and
  stack frames only, because e.g. a ``KeyError`` message is the key, which may be an EntityId.
- values registered with ``register_secret`` (every ``SecretStr`` in the settings, by
  ``configure_logging``) are replaced by ``***`` anywhere in the line, the message included.

The message text itself is the caller's responsibility: a constant sentence, never
``%s`` of a value. The canary tests check the whole pipeline's output.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
import sys
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal, TextIO

import orjson
from pydantic import BaseModel, SecretStr

from connector.errors import ConnectorError
from connector.model.schemas import ENTITY_NAMES

if TYPE_CHECKING:
    from connector.config.settings import Settings

__all__ = [
    "ALLOWED_FIELDS",
    "JsonFormatter",
    "TextFormatter",
    "configure_logging",
    "configure_logging_from",
    "log_context",
    "register_secret",
]

ALLOWED_FIELDS = frozenset(
    str.split(
        # where in Kafka (positions, never keys or values)
        "topic partition offset first_offset last_offset group_id transactional_id "
        # where in the Portal API: an upload session's id (the Portal's own, opaque)
        "session_id "
        # what kind of thing (entity is a type name, never an id; tables are the mapping's names)
        "entity tables operation route outcome phase reason status status_class snapshot_date snapshot_id "
        # how much, how long, which attempt
        "count events records bytes batches partitions attempt retry_in_s duration_s elapsed_s lag "
        "slack_s deadline next_run "
        # source transactions at a snapshot's cut (counts: connector.snapshot.transactions)
        "incomplete expired tracked "
        # a mapping's rollout (connector.ingest.rollout, snapshot.mapping_check): the source table,
        # what of it changed (entity_id or a field's name), mapping versions (hashes), counts
        "table what version previous versions older rows removed added "
        # how a topic is replicated (counts of brokers and replicas: the cluster's shape, no data)
        "brokers replication_factor min_insync_replicas "
        # what went wrong, by name (exception class, librdkafka error name, setting name), and
        # librdkafka's description of a failed transaction ("N message(s) timed out on <topic>
        # [p]"): topics, partitions, counts and broker names, never a key or a value
        "error kafka_error kafka_reason setting "
        # files and endpoints: deterministic keys (entity/date/part) and configured hosts
        "key path host port"
    )
)
"""Context fields that may appear in a log line; extend here, in review, never at a call site."""

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
_SCALARS = (str, int, float, bool, type(None), dt.date)  # dt.datetime is a dt.date
_MAX_VALUE_CHARS = 300
_CONTEXT: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "carecloud_log_context", default=None
)
_SECRETS: set[str] = set()


def register_secret(value: str | SecretStr | None) -> None:
    """Scrub ``value`` from every later log line (short values would mangle text; skipped)."""
    raw = value.get_secret_value() if isinstance(value, SecretStr) else value
    if raw and len(raw) >= 4:
        _SECRETS.add(raw)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to every line logged in this block (this thread or task only)."""
    token = _CONTEXT.set({**(_CONTEXT.get() or {}), **fields})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def _fields(record: logging.LogRecord) -> tuple[dict[str, Any], list[str]]:
    """The record's context (log_context, then extra), split into allowed and dropped names."""
    candidates = {
        **(_CONTEXT.get() or {}),
        **{k: v for k, v in record.__dict__.items() if k not in _STANDARD},
    }
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    for name, value in candidates.items():
        if isinstance(value, SecretStr):
            value = "***"
        ok = name in ALLOWED_FIELDS and isinstance(value, _SCALARS)
        if ok and name == "entity":
            ok = value in ENTITY_NAMES
        if not ok:
            dropped.append(name)
        elif isinstance(value, str) and len(value) > _MAX_VALUE_CHARS:
            kept[name] = value[:_MAX_VALUE_CHARS] + "..."
        else:
            kept[name] = value
    return kept, sorted(dropped)


def _exception(record: logging.LogRecord) -> dict[str, Any]:
    if not record.exc_info or record.exc_info[1] is None:
        return {}
    exc = record.exc_info[1]
    out: dict[str, Any] = {"exc_type": type(exc).__name__}
    if isinstance(exc, ConnectorError):
        out["exc_message"] = str(exc)
    out["stack"] = "".join(traceback.format_tb(exc.__traceback__)).rstrip()
    return out


def _scrub(line: str) -> str:
    for secret in _SECRETS:
        line = line.replace(secret, "***")
    return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg``, allowed context."""

    def format(self, record: logging.LogRecord) -> str:
        ts = dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds")
        line: dict[str, Any] = {
            "ts": ts.replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields, dropped = _fields(record)
        line.update({k: v for k, v in fields.items() if k not in line})
        if dropped:
            line["dropped"] = dropped
        line.update(_exception(record))
        return _scrub(orjson.dumps(line, default=str).decode())


class TextFormatter(logging.Formatter):
    """For people at a terminal: ``ts level logger msg key=value ...``, same allow-list."""

    def format(self, record: logging.LogRecord) -> str:
        ts = dt.datetime.fromtimestamp(record.created, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        fields, dropped = _fields(record)
        parts = [f"{ts}Z {record.levelname:<7} {record.name}: {record.getMessage()}"]
        parts += [f"{k}={v}" for k, v in fields.items()]
        if dropped:
            parts.append(f"dropped={','.join(dropped)}")
        exc = _exception(record)
        if exc:
            parts.append(f"exc_type={exc['exc_type']}")
            if "exc_message" in exc:
                parts.append(f"exc_message={exc['exc_message']!r}")
            parts.append("\n" + exc["stack"])
        return _scrub(" ".join(parts))


def configure_logging(
    level: str = "INFO",
    fmt: Literal["json", "text"] = "json",
    *,
    stream: TextIO | None = None,
    secrets_from: object = None,
) -> logging.Handler:
    """Route every logger through one handler on the root logger; returns that handler.

    ``secrets_from`` is a settings object (``connector.config.Settings``) or model: every
    ``SecretStr`` found in it is registered for scrubbing. Calling again replaces the handler.
    Without ``stream`` the handler writes to whatever ``sys.stderr`` is when a line is logged.

    This is the only place the process's logging is set up (never ``logging.basicConfig``,
    whose plain format would skip the allow-list and the scrubber): the CLI calls it before
    any command runs, and each command that has loaded its settings calls
    ``configure_logging_from`` (a test holds the package to it).
    """
    for model in _models(secrets_from):
        for name in type(model).model_fields:
            value = getattr(model, name)
            if isinstance(value, SecretStr):
                register_secret(value)
    handler = _Handler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # librdkafka's and botocore's chatter at DEBUG would swamp the connector's own lines.
    for noisy in ("botocore", "boto3", "urllib3", "paramiko", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
    return handler


def configure_logging_from(settings: Settings) -> logging.Handler:
    """The deployment's level and format (``CARECLOUD_OPS_LOG_*``), every secret registered:
    what a command calls once it has loaded its settings."""
    return configure_logging(settings.ops.log_level, settings.ops.log_format, secrets_from=settings)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler ``configure_logging`` installed, so a second call replaces only it.

    Given no stream, it writes to the current ``sys.stderr`` (as ``logging.lastResort`` does),
    so a redirection made later, e.g. by a test's capture, is followed rather than a closed
    stream kept.
    """

    def __init__(self, stream: TextIO | None) -> None:
        super().__init__(stream)  # sets ``stream`` to sys.stderr when None: undone below
        self._fixed: TextIO | None = stream

    @property
    def stream(self) -> TextIO:
        return self._fixed if self._fixed is not None else sys.stderr

    @stream.setter
    def stream(self, value: TextIO | None) -> None:
        self._fixed = value


def _models(obj: object) -> list[BaseModel]:
    if obj is None:
        return []
    if isinstance(obj, BaseModel):
        return [obj]
    return [v for v in vars(obj).values() if isinstance(v, BaseModel)]
