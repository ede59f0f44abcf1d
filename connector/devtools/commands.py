"""``carecloud-connector simulate-portal``: the CareCloud Portal simulator over HTTP.

A dev tool (tests and the demo, never production). ``connector.cli`` registers it where
``connector/devtools`` is present, a source checkout; the production wheel and image leave the
dev tools out, and the CLI's stand-in says so.
"""

from __future__ import annotations

import argparse

__all__ = ["add_simulate_portal_command"]


def add_simulate_portal_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "simulate-portal",
        help="run the CareCloud Portal simulator over HTTP (tests and the demo, never production)",
        description="Serves openapi.yaml with CareCloud's rules until SIGTERM or Ctrl-C; "
        "GET /_sim/accepted?entity=E&date=D returns the committed set (docs in portal_simulator.py).",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on; 0 picks a free one (printed)")
    p.add_argument("--api-key", required=True, help="the API key clients must send in X-API-Key")
    p.add_argument("--rate-limit", type=float, default=None, help="API requests per second before 429s")
    p.set_defaults(handler=_cmd_simulate_portal)


def _cmd_simulate_portal(args: argparse.Namespace) -> int:
    from connector.devtools.portal_simulator import serve  # when it runs, so --help stays fast

    return serve(args.host, args.port, args.api_key, args.rate_limit)
