"""Errors of the mapping stage; see ``connector.errors`` for the tree."""

from __future__ import annotations

from connector.errors import ConfigError, MappingError, SchemaValidationError

__all__ = ["MappingConfigError", "MappingError", "SchemaValidationError"]


class MappingConfigError(ConfigError):
    """The mapping file is invalid; the message names the file, line and field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid mapping:\n  " + "\n  ".join(problems))
