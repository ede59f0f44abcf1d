"""The connector's error tree.

Every error the connector raises on purpose derives from ``ConnectorError``. The split that
matters to the runner is by class, not by message: a ``TransientError`` is retried (backoff,
do not advance offsets), a ``BadInputError`` is dead-lettered with its ``reason`` while the
stream goes on, and any other ``TerminalError`` stops the process with a non-zero exit so the
orchestrator restarts it::

    ConnectorError
    ├── TransientError            retry; never dead-letter, never advance offsets
    └── TerminalError             do not retry as-is
        ├── ConfigError           bad setting at start-up; names the setting
        └── BadInputError         one event is unusable; goes to the dead-letter topic
            ├── DecodeError           bytes -> change event failed
            ├── MappingError          change event -> entity failed
            └── SchemaValidationError entity record breaks its Avro schema

Stages subclass these in their own ``exceptions.py``. Messages and ``reason`` strings name
fields, rules and positions, never record values: the data is families' health claims.
"""

from __future__ import annotations

__all__ = [
    "BadInputError",
    "ConfigError",
    "ConnectorError",
    "DecodeError",
    "MappingError",
    "SchemaValidationError",
    "TerminalError",
    "TransientError",
]


class ConnectorError(Exception):
    """Root of every error the connector raises on purpose."""


class TransientError(ConnectorError):
    """A fault that may pass (broker, registry or sink unavailable): retry, keep offsets."""


class TerminalError(ConnectorError):
    """A fault that retrying the same thing cannot fix."""


class ConfigError(TerminalError):
    """A setting or mapping is invalid; raised at start-up with the setting named."""


class BadInputError(TerminalError):
    """One event cannot be used; it is dead-lettered and the stream continues.

    ``reason`` is a short machine-friendly code (``missing_primary_key``) kept as a metric
    label and a dead-letter header; ``str(error)`` is the operator's sentence. Neither may
    contain record values.
    """

    reason: str = "bad_input"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class DecodeError(BadInputError):
    """The message bytes could not be decoded into a change event."""

    reason = "decode_error"


class MappingError(BadInputError):
    """The change event could not be mapped to a CareCloud entity."""

    reason = "mapping_error"


class SchemaValidationError(BadInputError):
    """The mapped record does not conform to its entity's Avro schema."""

    reason = "schema_violation"
