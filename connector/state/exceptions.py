"""Errors of the state stage; see ``connector.errors`` for the tree."""

from __future__ import annotations

from connector.errors import ConfigError, TerminalError

__all__ = ["StoreCorruptedError", "StoreError", "TopicConfigError"]


class StoreError(TerminalError):
    """The local store cannot be written (disk full, I/O error): fail closed, lose nothing.

    Nothing is acknowledged before the local write: the Kafka transaction already holds the
    change, so the restarted process rebuilds the store from the state topic.
    """


class StoreCorruptedError(StoreError):
    """A block of the local store failed its checksum: abort the batch and rebuild the store."""


class TopicConfigError(ConfigError):
    """An existing topic has settings the connector cannot work with; names the topic and setting."""
