"""Errors of the sinks stage; see ``connector.errors`` for the whole tree.

The first two are also ``ValueError``::

    ConfigError
    └── SinkConfigError    a key prefix, compression level or schema type a sink cannot use
    TerminalError
    ├── EncodeError        a record cannot be written in the file format (names field and row)
    ├── StorageDenied      credentials or permissions refused by S3/SFTP; retrying cannot help
    └── PreconditionFailed a conditional write lost: the key exists, or changed since it was read
    TransientError
    └── StorageUnavailable endpoint down, 5xx or throttling after the storage's bounded retries

An ``EncodeError`` stops the run rather than dead-lettering the record: records in the state
have passed schema validation, so a record that cannot be encoded is a bug, and a file that
silently lacks it would be a wrong full snapshot. Messages name the entity, the field and the
row's position in the file, never the value or the EntityId (they go to logs).
"""

from __future__ import annotations

from connector.errors import ConfigError, TerminalError, TransientError

__all__ = ["EncodeError", "PreconditionFailed", "SinkConfigError", "StorageDenied", "StorageUnavailable"]


class SinkConfigError(ConfigError, ValueError):
    """A sink setting is invalid: raised at start-up with the setting named."""


class EncodeError(TerminalError, ValueError):
    """A record's field does not hold a value of its schema type; the run stops."""


class StorageUnavailable(TransientError):
    """The storage did not answer usefully after its own bounded retries; the run may retry later."""


class StorageDenied(TerminalError):
    """The storage refused the credentials or the operation (403, permission denied)."""


class PreconditionFailed(TerminalError):
    """A conditional ``put_bytes`` lost: someone else created or changed the object first."""
