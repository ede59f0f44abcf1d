"""Errors of the ``model`` stage.

Validation and decoding failures use the shared classes in :mod:`connector.errors`
(``SchemaValidationError``, ``DecodeError``); only the lookup error is the stage's own::

    ConfigError
    └── UnknownSchemaError    a schema name that is not one of the seven (also a KeyError)
"""

from __future__ import annotations

from connector.errors import ConfigError

__all__ = ["UnknownSchemaError"]


class UnknownSchemaError(ConfigError, KeyError):
    """A schema was asked for by a name that is not an entity or the envelope."""

    def __str__(self) -> str:  # KeyError would quote the message as a repr
        return str(self.args[0]) if self.args else ""
