"""``carecloud-connector schemas``: the entity schemas and their fingerprints."""

from __future__ import annotations

import argparse

__all__ = ["add_schemas_command"]


def add_schemas_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("schemas", help="list the entity schemas and their fingerprints")
    p.set_defaults(handler=_cmd_schemas)


def _cmd_schemas(args: argparse.Namespace) -> int:
    from connector.model import ENTITY_NAMES, fingerprint

    for name in ENTITY_NAMES:
        print(f"{name:<14} {fingerprint(name)}")
    return 0
