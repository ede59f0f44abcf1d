"""The ``carecloud-connector`` command.

Each subcommand lives in its stage and registers here, so the CLI stays a thin edge: parsing
arguments, printing, and turning a ``ConnectorError`` into a clear message and exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from connector import __version__
from connector.errors import ConnectorError

__all__ = ["build_parser", "main"]

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="carecloud-connector",
        description="Kafka CDC events -> CareCloud entities -> daily snapshot to S3/SFTP and the Portal API.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_schemas(sub)
    return parser


def _add_schemas(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("schemas", help="list the entity schemas and their fingerprints")
    p.set_defaults(handler=_cmd_schemas)


def _cmd_schemas(args: argparse.Namespace) -> int:
    from connector.model import ENTITY_NAMES, fingerprint

    for name in ENTITY_NAMES:
        print(f"{name:<14} {fingerprint(name)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (2 for a usage error, 1 for a connector error)."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except ConnectorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
