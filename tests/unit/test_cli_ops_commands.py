"""The operator commands are registered in the CLI with the arguments the docs promise."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest

import connector.cli
from connector.cli import build_parser, main


def test_every_operator_command_is_registered() -> None:
    parser = build_parser()
    assert parser.parse_args(["status", "--json"]).json
    assert parser.parse_args(["validate"]).handler is not None
    assert parser.parse_args(["rebuild-store", "--partition", "1", "--partition", "3"]).partition == [1, 3]
    args = parser.parse_args(
        ["dlq", "replay", "--from-timestamp", "2026-03-08T00:00:00-08:00", "--reason", "a", "--reason", "b"]
    )
    assert args.from_timestamp == dt.datetime(2026, 3, 8, 8, tzinfo=dt.UTC)
    assert (args.reason, args.dry_run, args.limit, args.since) == (["a", "b"], False, None, None)
    assert parser.parse_args(["dlq", "list", "--since", "7", "--limit", "2"]).since == 7


@pytest.mark.parametrize(
    "argv",
    [
        ["dlq", "replay", "--since", "1", "--from-timestamp", "2026-03-08T00:00:00Z"],  # one start only
        ["dlq", "list", "--from-timestamp", "2026-03-08T00:00:00"],  # naive: ambiguous
        ["dlq"],  # list or replay
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2
    capsys.readouterr()


def test_python_dash_m_connector_is_the_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "connector", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: carecloud-connector")
    for command in ("ingest", "replay", "schemas", "snapshot", "status", "dlq", "simulate-portal"):
        assert command in done.stdout


def test_each_stage_registers_its_own_commands() -> None:
    """The handlers live with their stage; the CLI only registers them (and composes ingest with
    the daily snapshot, which connector.ingest may not import)."""
    parser = build_parser()
    modules = {
        command: _handler_module(parser.parse_args(argv).handler)
        for command, argv in {
            "schemas": ["schemas"],
            "replay": ["replay", "--mapping", "m.yaml", "--input", "e.jsonl"],
            "ingest": ["ingest"],
            "snapshot": ["snapshot"],
            "simulate-portal": ["simulate-portal", "--api-key", "K"],
        }.items()
    }
    assert modules == {
        "schemas": "connector.model.commands",
        "replay": "connector.ingest.commands",
        "ingest": "connector.ingest.commands",
        "snapshot": "connector.snapshot.commands",
        "simulate-portal": "connector.devtools.commands",
    }
    ingest = parser.parse_args(["ingest"]).handler
    assert ingest.keywords["beside"] is connector.cli._daily_snapshot


def _handler_module(handler: object) -> str:
    return str(getattr(handler, "func", handler).__module__)


def test_without_the_dev_tools_simulate_portal_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The production wheel leaves connector/devtools out: the command is still there, takes its
    usual arguments and explains, instead of a usage error."""
    monkeypatch.setitem(sys.modules, "connector.devtools.commands", None)  # import fails as if absent
    assert main(["simulate-portal", "--port", "8081", "--api-key", "K"]) == 2
    assert "simulate-portal is a dev tool: run it from a source checkout" in capsys.readouterr().err
