"""Errors of the snapshot stage; see ``connector.errors`` for the whole tree.

Both are also ``ValueError``, so code that only knows the standard library still catches them::

    ConfigError
    └── SnapshotConfigError      a schedule, threshold or ratio no run can work with (names it)
    TerminalError
    └── SnapshotArgumentError    a caller passed a value no run can have (a negative count)
        └── NaiveDatetimeError   a datetime without a zone where an instant is meant

Messages name the setting or argument, never a record value.
"""

from __future__ import annotations

from connector.errors import ConfigError, TerminalError

__all__ = ["NaiveDatetimeError", "SnapshotArgumentError", "SnapshotConfigError"]


class SnapshotConfigError(ConfigError, ValueError):
    """A snapshot setting is invalid: raised at start-up with the setting named."""


class SnapshotArgumentError(TerminalError, ValueError):
    """An argument is outside what any run can produce: a bug in the caller, not bad input."""


class NaiveDatetimeError(SnapshotArgumentError):
    """A naive datetime was passed where an instant is meant: it would be read as local time."""
