"""``carecloud-connector validate``: the configuration and the mapping, checked offline.

An operator (or a CI step before a rollout) runs it with the deployment's environment and
learns every problem at once: every ``CARECLOUD_*`` setting as ``load_settings`` reports it,
the snapshot's destination settings (``sink_problems``) and the mapping file with line numbers.
It connects to nothing, so it also works where Kafka or the bucket cannot be reached.

Settings the daily snapshot needs (bucket, SFTP host, Portal URL and key) are problems when
``CARECLOUD_SNAPSHOT_ENABLED=true`` (the process would refuse to start) and warnings otherwise
(only the ``snapshot`` command would need them). No secret value is ever printed: any text a
``SecretStr`` setting's value appears in has it masked before output.
"""

from __future__ import annotations

import argparse
import os
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings

from connector.config import settings as settings_module
from connector.config.exceptions import SettingsError
from connector.config.settings import (
    IngestSettings,
    PortalSettings,
    S3Settings,
    SftpSettings,
    SnapshotSettings,
    load_settings,
    sink_problems,
)

__all__ = ["Report", "add_validate_command", "validate"]

_MASK = "***"
_S = typing.TypeVar("_S", bound=BaseSettings)


@dataclass
class Report:
    """What ``validate`` found; ``valid`` ignores warnings."""

    problems: list[str] = field(default_factory=list)
    """Settings the deployment cannot start with, each naming its variable."""
    warnings: list[str] = field(default_factory=list)
    """Settings only the ``snapshot`` command needs while the in-process snapshot is off."""
    mapping_file: str | None = None
    mapping_problems: list[str] = field(default_factory=list)
    """``<file>:<line>: <where>: <problem>`` for every problem of the mapping."""
    tables: int = 0
    topics: int = 0

    @property
    def valid(self) -> bool:
        return not self.problems and not self.mapping_problems

    def as_json(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "settings": {"problems": self.problems, "warnings": self.warnings},
            "mapping": {
                "file": self.mapping_file,
                "problems": self.mapping_problems,
                "tables": self.tables,
                "topics": self.topics,
            },
        }


Preview = typing.Callable[[Path], Any]
"""``connector.ingest.preview.preview_mapping``, handed in by the CLI (config imports no stage)."""


def add_validate_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], preview: Preview | None = None
) -> None:
    p = sub.add_parser(
        "validate",
        help="check the CARECLOUD_* settings and the mapping file without connecting to anything",
        description="Every problem at once; exit 0 when valid, 1 when not. Secret values are never printed.",
    )
    p.add_argument(
        "--mapping",
        type=Path,
        default=None,
        help="mapping file to check (default: CARECLOUD_INGEST_MAPPING_FILE)",
    )
    p.add_argument(
        "--preview",
        action="store_true",
        help="also compare the mapping with the current one against the live state: per entity, records "
        "and fields that change, records the new mapping would refuse, EntityIds removed and added "
        "(connects to Kafka, read-only; writes nothing)",
    )
    p.add_argument(
        "--examples", action="store_true", help="with --preview, show a few EntityIds (a terminal only)"
    )
    p.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    p.set_defaults(handler=_cmd_validate, preview_hook=preview)


def validate(mapping: Path | None = None) -> Report:
    """Check the settings read from the environment and the mapping they (or ``mapping``) name."""
    env = os.environ
    report = Report()
    try:
        load_settings()
    except SettingsError as exc:
        report.problems.extend(exc.problems)
    snapshot = _model(SnapshotSettings)
    if snapshot is not None:
        extra = sink_problems(snapshot, _model(S3Settings), _model(SftpSettings), _model(PortalSettings))
        new = [p for p in extra if p not in report.problems]
        if snapshot.enabled:
            report.problems.extend(new)
        else:
            report.warnings.extend(
                f"{p} (needed by the snapshot command; CARECLOUD_SNAPSHOT_ENABLED is false)" for p in new
            )
    path = mapping if mapping is not None else _mapping_path(env)
    if path is not None:
        report.mapping_file = str(path)
        _check_mapping(report, path)
    secrets = secret_values(env)
    report.problems = [mask(p, secrets) for p in report.problems]
    report.warnings = [mask(p, secrets) for p in report.warnings]
    report.mapping_problems = [mask(p, secrets) for p in report.mapping_problems]
    return report


def _model(cls: type[_S]) -> _S | None:
    """The model from the environment, its invalid fields put back to their defaults.

    ``load_settings`` has already named the invalid variables; the rest of the model still
    decides the cross-setting checks (a bad ``CARECLOUD_SNAPSHOT_FORMAT`` must not hide a
    missing ``CARECLOUD_S3_BUCKET``). None when a required field is missing or invalid.
    """
    try:
        return cls()
    except ValidationError as exc:
        failed = {str(err["loc"][0]) for err in exc.errors() if err["loc"]}
    fields = cls.model_fields
    if any(name not in fields or fields[name].is_required() for name in failed):
        return None
    defaults = {name: fields[name].get_default(call_default_factory=True) for name in failed}
    try:
        return cls(**defaults)
    except ValidationError:
        return None


def _mapping_path(env: typing.Mapping[str, str]) -> Path | None:
    ingest = _model(IngestSettings)
    if ingest is not None:
        return ingest.mapping_file
    # Another ingest setting is wrong; the mapping can still be checked (names are case-insensitive).
    wanted = "CARECLOUD_INGEST_MAPPING_FILE"
    value = next((v for k, v in env.items() if k.upper() == wanted), None)
    return Path(value) if value else None


def _check_mapping(report: Report, path: Path) -> None:
    from connector.mapping import MappingConfigError, load_mapping

    try:
        spec = load_mapping(path)
    except MappingConfigError as exc:
        report.mapping_problems.extend(exc.problems)
        return
    report.tables, report.topics = len(spec.tables), len(spec.topics)


def secret_values(env: typing.Mapping[str, str]) -> list[str]:
    """The values of every set ``SecretStr`` setting of every settings model, longest first.

    Found by type rather than by a list of names, so a secret added to any model later (Kafka
    SASL, OAuth) is masked without touching this module.
    """
    names: set[str] = set()
    for cls in vars(settings_module).values():
        if isinstance(cls, type) and issubclass(cls, BaseSettings) and cls is not BaseSettings:
            prefix = str(cls.model_config.get("env_prefix", ""))
            for name, info in cls.model_fields.items():
                if _is_secret(info.annotation):
                    names.add((prefix + name).upper())
    values = {v for k, v in env.items() if k.upper() in names and v}
    return sorted(values, key=len, reverse=True)


def _is_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return any(_is_secret(arg) for arg in typing.get_args(annotation))


def mask(text: str, secrets: list[str]) -> str:
    """``text`` with every secret value replaced by ``***``."""
    for value in secrets:
        text = text.replace(value, _MASK)
    return text


def format_report(report: Report) -> str:
    """The human output: settings, then mapping, then the verdict."""
    lines = []
    if report.problems:
        lines.append(f"settings: {len(report.problems)} problem(s)")
        lines.extend(f"  {p}" for p in report.problems)
    else:
        lines.append("settings: ok")
    if report.warnings:
        lines.append(f"settings warnings: {len(report.warnings)}")
        lines.extend(f"  {w}" for w in report.warnings)
    if report.mapping_file is None:
        lines.append("mapping: not checked (CARECLOUD_INGEST_MAPPING_FILE is not set)")
    elif report.mapping_problems:
        lines.append(f"mapping {report.mapping_file}: {len(report.mapping_problems)} problem(s)")
        lines.extend(f"  {p}" for p in report.mapping_problems)
    else:
        lines.append(f"mapping {report.mapping_file}: ok ({report.tables} tables, {report.topics} topics)")
    lines.append("valid" if report.valid else "invalid")
    return "\n".join(lines)


def _cmd_validate(args: argparse.Namespace) -> int:
    report = validate(mapping=args.mapping)
    diff = None
    if args.preview and report.valid and report.mapping_file is not None and args.preview_hook is not None:
        diff = args.preview_hook(Path(report.mapping_file))
    if args.json:
        body = report.as_json() | ({"preview": diff.as_json()} if diff is not None else {})
        sys.stdout.buffer.write(orjson.dumps(body) + b"\n")
    else:
        print(format_report(report))
        if diff is not None:
            print("against the live state (read-only):")
            print(diff.describe(examples=args.examples))
    return 0 if report.valid else 1
