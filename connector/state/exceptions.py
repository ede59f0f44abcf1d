"""Errors of the state stage; see ``connector.errors`` for the tree."""

from __future__ import annotations

from connector.errors import BadInputError, ConfigError, TerminalError

__all__ = ["StateRowTooLargeError", "StoreCorruptedError", "StoreError", "TopicConfigError"]


class StoreError(TerminalError):
    """The local store cannot be written (disk full, I/O error): fail closed, lose nothing.

    Nothing is acknowledged before the local write: the Kafka transaction already holds the
    change, so the restarted process rebuilds the store from the state topic.
    """


class StoreCorruptedError(StoreError):
    """A block of the local store failed its checksum: abort the batch and rebuild the store."""


class TopicConfigError(ConfigError):
    """An existing topic has settings the connector cannot work with; names the topic and setting."""


class StateRowTooLargeError(BadInputError):
    """The event's state row (key and value) would not fit the state topic's record limit.

    Raised before anything of the event is written, so the batch carries on without it; the
    event is dead-lettered by reference (its bytes would not fit the dead-letter topic either).
    """

    reason = "state_row_too_large"
