"""Errors of the source stage (consume and decode); see ``connector.errors`` for the tree."""

from __future__ import annotations

from connector.errors import DecodeError, TerminalError, TransientError

__all__ = ["DecodeError", "SchemaRegistryUnavailable", "SignalError", "UnknownSchemaError"]


class UnknownSchemaError(DecodeError):
    """The message names a schema id the registry does not know."""

    reason = "unknown_schema_id"


class SchemaRegistryUnavailable(TransientError):  # noqa: N818 - the name other stages already use
    """The registry did not answer: back off, keep offsets; this is not bad input."""


class SignalError(TerminalError):
    """A Debezium signal was not delivered: its topic is missing, or the broker refused it."""
