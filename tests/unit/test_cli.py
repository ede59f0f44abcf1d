"""The CLI's two guards (issue 16): every command logs through ``connector.ops.logs``, and an
unexpected exception leaves by its class and a hint, its message and traceback only on --debug."""

from __future__ import annotations

import argparse
import ast
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

import connector.cli
import connector.model.commands
from connector.cli import UNEXPECTED_EXIT, main
from connector.snapshot.exceptions import SnapshotArgumentError

PACKAGE = Path(connector.cli.__file__).parent
CANARY_ID = "FAM-CANARY-7f3a9"
CANARY_NAME = "Zebulon Canaryfield"
LOGGING_SETUP = {"basicConfig", "dictConfig", "fileConfig", "addHandler"}
"""Calls that set up logging; only connector/ops/logs.py may make them."""


def test_only_connector_logs_sets_up_logging() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "ops" / "logs.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            called = node.func
            name = called.attr if isinstance(called, ast.Attribute) else getattr(called, "id", None)
            if name in LOGGING_SETUP:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {name}")
    assert found == [], "set logging up with connector.ops.logs.configure_logging(_from)"


Fail = Callable[[Exception], None]


@pytest.fixture
def schemas_raises(monkeypatch: pytest.MonkeyPatch) -> Fail:
    """Make the ``schemas`` command log a line and raise the given exception (``main`` builds
    its parser at each call, so it picks the patched function up)."""

    def fail(exc: Exception) -> None:
        def command(_args: argparse.Namespace) -> int:
            logging.getLogger("connector.test").warning(
                "about to fail", extra={"record": {"FamilyName": CANARY_NAME}, "entity": "Family"}
            )
            raise exc

        monkeypatch.setattr(connector.model.commands, "_cmd_schemas", command)

    return fail


def _json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_an_unexpected_error_leaves_by_its_class_and_a_hint(
    schemas_raises: Fail, capsys: pytest.CaptureFixture[str]
) -> None:
    schemas_raises(KeyError(CANARY_ID))
    assert main(["schemas"]) == UNEXPECTED_EXIT
    err = capsys.readouterr().err
    assert CANARY_ID not in err
    assert CANARY_NAME not in err
    assert "Traceback" not in err
    last = err.rstrip().splitlines()[-1]
    assert last == (
        "unexpected error: KeyError; run again with --debug for the traceback; "
        "this is a bug, please report it"
    )
    logged = _json_lines(err)  # the command's own line and the error's stack frames, as JSON
    assert [line["msg"] for line in logged] == ["about to fail", "unexpected error"]
    assert logged[0]["dropped"] == ["record"]
    assert (logged[1]["exc_type"], logged[1]["error"]) == ("KeyError", "KeyError")
    assert "exc_message" not in logged[1]


def test_debug_prints_the_traceback(schemas_raises: Fail, capsys: pytest.CaptureFixture[str]) -> None:
    schemas_raises(KeyError(CANARY_ID))
    assert main(["--debug", "schemas"]) == UNEXPECTED_EXIT
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert f"KeyError: '{CANARY_ID}'" in err  # asked for, at a terminal
    assert err.rstrip().endswith("this is a bug, please report it")


def test_a_connector_error_keeps_its_clean_message(
    schemas_raises: Fail, capsys: pytest.CaptureFixture[str]
) -> None:
    schemas_raises(SnapshotArgumentError("--override: unknown entity Famly"))
    assert main(["schemas"]) == 1
    err = capsys.readouterr().err
    assert err.rstrip().endswith("error: --override: unknown entity Famly")
    assert "Traceback" not in err
    assert "unexpected" not in err


def test_a_commands_log_lines_are_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """Through the real snapshot command: its argument check fails before it loads settings,
    and its stage's logger writes what every command's does: one JSON object per line."""
    assert main(["snapshot", "--override", "Famly"]) == 1
    logging.getLogger("connector.snapshot.run").info("snapshot 2026-11-25: cut taken", extra={"lag": 0})
    err = capsys.readouterr().err
    assert "error: --override: unknown entity Famly" in err
    [line] = _json_lines(err)
    assert (line["level"], line["logger"], line["msg"], line["lag"]) == (
        "INFO",
        "connector.snapshot.run",
        "snapshot 2026-11-25: cut taken",
        0,
    )
