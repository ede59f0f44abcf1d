"""Errors of the sinks stage; see ``connector.errors`` for the whole tree.

The first two are also ``ValueError``::

    ConfigError
    └── SinkConfigError              a key prefix, compression level or schema type a sink cannot use
    TerminalError
    ├── EncodeError                  a record cannot be written in the file format (field and row)
    ├── StorageDeniedError           credentials or permissions refused by S3/SFTP
    ├── PreconditionFailedError      a conditional write lost: the key exists, or changed
    ├── PortalRejectedError          the Portal refused a call (4xx but 429): status and problem type
    │   └── PortalAuthError          401/403: the API key is wrong or lacks access; every entity fails
    └── PortalMismatchError          the records disagree with what the Portal acknowledged
    TransientError
    ├── StorageUnavailableError      endpoint down, 5xx or throttling after bounded retries
    └── PortalUnavailableError       5xx, timeouts, dropped connections after retries, or the deadline
        └── PortalBackpressureError  429/503: carries the delay the Portal asked for (``retry_after``)

An ``EncodeError`` stops the run rather than dead-lettering the record: records in the state
have passed schema validation, so a record that cannot be encoded is a bug, and a file that
silently lacks it would be a wrong full snapshot. Messages name the entity, the field and the
row's position in the file, never the value or the EntityId (they go to logs).
"""

from __future__ import annotations

from connector.errors import ConfigError, TerminalError, TransientError

__all__ = [
    "EncodeError",
    "PortalAuthError",
    "PortalBackpressureError",
    "PortalMismatchError",
    "PortalRejectedError",
    "PortalUnavailableError",
    "PreconditionFailedError",
    "SinkConfigError",
    "StorageDeniedError",
    "StorageUnavailableError",
]


class SinkConfigError(ConfigError, ValueError):
    """A sink setting is invalid: raised at start-up with the setting named."""


class EncodeError(TerminalError, ValueError):
    """A record's field does not hold a value of its schema type; the run stops."""


class StorageUnavailableError(TransientError):
    """The storage did not answer usefully after its own bounded retries; the run may retry later."""


class StorageDeniedError(TerminalError):
    """The storage refused the credentials or the operation (403, permission denied)."""


class PreconditionFailedError(TerminalError):
    """A conditional ``put_bytes`` lost: someone else created or changed the object first."""


class PortalRejectedError(TerminalError):
    """The Portal refused a call for a reason retrying cannot fix; fails that entity only.

    ``status`` is the HTTP status and ``problem_type`` the RFC 9457 problem's ``type`` reduced to
    its token (``schema-violation``; ``unknown`` when it was not one). The problem's ``title``
    and ``detail`` are not kept: they are the Portal's free text, which may echo the refused
    record, and this error's message goes to logs, the manifest and the CLI (issue 16).
    """

    def __init__(self, message: str, *, status: int, problem_type: str = "unknown") -> None:
        super().__init__(message)
        self.status, self.problem_type = status, problem_type


class PortalAuthError(PortalRejectedError):
    """401/403: the API key is missing, wrong or lacks access; no entity can be delivered."""


class PortalMismatchError(TerminalError):
    """The records do not agree with the count given or with what the Portal acknowledged."""


class PortalUnavailableError(TransientError):
    """The Portal did not answer usefully within the retry budget or before the deadline."""


class PortalBackpressureError(PortalUnavailableError):
    """The Portal asked to slow down (429, or 503 with ``Retry-After``).

    ``retry_after`` is the delay in seconds it asked for, or ``None`` when it named none; the
    caller decides when to retry (the client waits it out, bounded by attempts and deadline).
    """

    def __init__(self, message: str, *, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
