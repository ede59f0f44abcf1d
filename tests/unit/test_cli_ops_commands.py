"""The operator commands are registered in the CLI with the arguments the docs promise."""

from __future__ import annotations

import datetime as dt

import pytest

from connector.cli import build_parser


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
