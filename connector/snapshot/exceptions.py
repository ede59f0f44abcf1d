"""Errors of the snapshot stage; see ``connector.errors`` for the whole tree.

The first three are also ``ValueError``, so code that only knows the standard library still
catches them::

    ConfigError
    └── SnapshotConfigError      a schedule, threshold or ratio no run can work with (names it)
    TerminalError
    └── SnapshotArgumentError    a caller passed a value no run can have (a negative count)
        └── NaiveDatetimeError   a datetime without a zone where an instant is meant
    TerminalError
    └── LeaseLostError           another pod took the date's lease over: stop before publishing
    TransientError
    ├── LeaseBusyError           another pod is running the date now: try again later
    └── RunStoppedError          the process is stopping: the run left at a safe point

Messages name the setting or argument, never a record value.
"""

from __future__ import annotations

from connector.errors import ConfigError, TerminalError, TransientError

__all__ = [
    "LeaseBusyError",
    "LeaseLostError",
    "NaiveDatetimeError",
    "RunStoppedError",
    "SnapshotArgumentError",
    "SnapshotConfigError",
]


class SnapshotConfigError(ConfigError, ValueError):
    """A snapshot setting is invalid: raised at start-up with the setting named."""


class SnapshotArgumentError(TerminalError, ValueError):
    """An argument is outside what any run can produce: a bug in the caller, not bad input."""


class NaiveDatetimeError(SnapshotArgumentError):
    """A naive datetime was passed where an instant is meant: it would be read as local time."""


class LeaseLostError(TerminalError):
    """Our lease expired and another owner took it: this run must not publish anything more."""


class LeaseBusyError(TransientError):
    """Another live owner holds the date's lease; its run will publish the date."""


class RunStoppedError(TransientError):
    """The process is stopping (SIGTERM): the run stopped between two entities and released its
    lease, so another pod can resume the date at its pinned cut without waiting out the TTL."""
