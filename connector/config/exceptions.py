"""Errors of the config stage."""

from __future__ import annotations

from connector.errors import ConfigError

__all__ = ["SettingsError"]


class SettingsError(ConfigError):
    """One or more settings are invalid; each line names the environment variable."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))
