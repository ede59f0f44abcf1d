"""The ``carecloud-connector`` command.

Each subcommand lives in its stage (``connector/<stage>/commands.py``, ``connector.ops.status``)
and registers here, so the CLI stays a thin edge: parsing arguments, printing, and turning a
``ConnectorError`` into a clear message and exit code. One thing is composed here: ``ingest``
runs the daily snapshot beside it (``_daily_snapshot``), as the two runners never import each
other; and ``simulate-portal`` comes from the dev tools, where they are installed.

Two guards hold for every command (issue 16): logging is set up by ``connector.ops.logs`` before
the command runs (JSON, allow-listed fields, secrets scrubbed), and an unexpected exception is
reported by its class only. Its message and traceback may hold a record's values (a
``KeyError``'s message is the key), and this output ends up in pod logs; ``--debug`` prints
the traceback for someone at a terminal who asked for it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from connector import __version__
from connector.config.commands import add_validate_command
from connector.errors import ConnectorError
from connector.ingest.backfill import add_backfill_command
from connector.ingest.commands import add_dlq_command, add_ingest_command, add_replay_command
from connector.ingest.preview import preview_mapping
from connector.model.commands import add_schemas_command
from connector.ops.logs import configure_logging
from connector.ops.status import add_status_command
from connector.snapshot.commands import add_snapshot_command
from connector.state.commands import add_rebuild_store_command

if TYPE_CHECKING:
    from connector.config import Settings

__all__ = ["UNEXPECTED_EXIT", "build_parser", "main"]

log = logging.getLogger(__name__)

_SNAPSHOT_STOP_S = 60.0
"""How long a stopping ingest waits for a snapshot run to reach its next safe point (an entity
being uploaded completes first); within the pod's 120 s grace, after the batch in flight."""

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="carecloud-connector",
        description="Kafka CDC events -> CareCloud entities -> daily snapshot to S3/SFTP and the Portal API.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="on an unexpected error, print its traceback (its message may hold record values: "
        "for a terminal, never for collected logs)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    add_schemas_command(sub)
    add_replay_command(sub)
    add_ingest_command(sub, beside=_daily_snapshot)
    add_snapshot_command(sub)
    add_status_command(sub)
    add_validate_command(sub, preview=preview_mapping)
    add_rebuild_store_command(sub)
    add_dlq_command(sub)
    add_backfill_command(sub)
    _add_dev_commands(sub)
    return parser


def _daily_snapshot(settings: Settings, stop: threading.Event) -> Callable[[], None] | None:
    """The daily snapshot beside ingest, on its own thread, when the settings enable it.

    Composed here, not in ``connector.ingest``: the two runners never import each other
    (``.importlinter``), so the process that runs both is put together by the CLI.
    """
    if not settings.snapshot.enabled:
        return None
    from connector.ops.metrics import METRICS
    from connector.snapshot.service import build_scheduler

    scheduler = build_scheduler(settings, stop, metrics=METRICS)
    daily = threading.Thread(target=scheduler.run_forever, name="snapshot-scheduler", daemon=True)
    daily.start()
    # When ingest stops, a run in progress leaves at its next safe point and frees its lease.
    return lambda: daily.join(_SNAPSHOT_STOP_S)


def _add_dev_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``simulate-portal``, from ``connector.devtools`` where it is present (a source checkout).

    The production wheel and image leave the dev tools out: there a stand-in takes whatever
    arguments it is given (no option prefix, so none is a usage error) and says so.
    """
    try:
        from connector.devtools.commands import add_simulate_portal_command
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("connector.devtools"):
            raise
        p = sub.add_parser(
            "simulate-portal",
            help="a dev tool, left out of this installation",
            prefix_chars="\0",
            add_help=False,
        )
        p.add_argument("arguments", nargs="*")
        p.set_defaults(handler=_no_devtools)
        return
    add_simulate_portal_command(sub)


def _no_devtools(args: argparse.Namespace) -> int:
    print("simulate-portal is a dev tool: run it from a source checkout (make venv)", file=sys.stderr)
    return 2


UNEXPECTED_EXIT = 3
"""Exit code of an unexpected error (a bug), apart from a connector error's 1 and usage's 2."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (2 for a usage error, 1 for a connector error,
    ``UNEXPECTED_EXIT`` for any other exception).

    A ``ConnectorError``'s message names settings, fields and positions, never values (the
    contract of ``connector.errors``), so it is printed. Any other exception is printed by its
    class only, unless ``--debug`` asks for the traceback.
    """
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    configure_logging()  # until a command loads its settings (configure_logging_from)
    try:
        return handler(args)
    except ConnectorError as exc:
        if args.debug:
            traceback.print_exception(exc, file=sys.stderr)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        if args.debug:
            traceback.print_exception(exc, file=sys.stderr)
        else:  # the stack frames, by connector.ops.logs, which drops a non-connector error's message
            log.critical("unexpected error", extra={"error": type(exc).__name__}, exc_info=exc)
        print(
            f"unexpected error: {type(exc).__name__}; run again with --debug for the traceback; "
            "this is a bug, please report it",
            file=sys.stderr,
        )
        return UNEXPECTED_EXIT


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
