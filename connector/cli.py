"""The ``carecloud-connector`` command.

Each subcommand lives in its stage and registers here, so the CLI stays a thin edge: parsing
arguments, printing, and turning a ``ConnectorError`` into a clear message and exit code.

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
import traceback
from collections.abc import Callable, Sequence

from connector import __version__
from connector.config.commands import add_validate_command
from connector.errors import ConnectorError
from connector.ingest.commands import add_dlq_command
from connector.ops.logs import configure_logging
from connector.ops.status import add_status_command
from connector.snapshot.commands import add_snapshot_command
from connector.state.commands import add_rebuild_store_command

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
    _add_schemas(sub)
    _add_replay(sub)
    _add_ingest(sub)
    add_snapshot_command(sub)
    add_status_command(sub)
    add_validate_command(sub)
    add_rebuild_store_command(sub)
    add_dlq_command(sub)
    _add_simulate_portal(sub)
    return parser


def _add_simulate_portal(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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

    def run(args: argparse.Namespace) -> int:
        try:
            from connector.devtools.portal_simulator import serve
        except ModuleNotFoundError as exc:  # the production wheel and image leave connector/devtools out
            if not (exc.name or "").startswith("connector.devtools"):
                raise
            print("simulate-portal is a dev tool: run it from a source checkout (make venv)", file=sys.stderr)
            return 2

        return serve(args.host, args.port, args.api_key, args.rate_limit)

    p.set_defaults(handler=run)


def _add_ingest(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "ingest",
        help="run the ingest service: source topics into the state (settings: CARECLOUD_* env)",
    )
    p.set_defaults(handler=_cmd_ingest)


def _cmd_ingest(args: argparse.Namespace) -> int:
    import faulthandler
    import signal
    import threading

    from connector.config import load_settings
    from connector.ingest.service import IngestService
    from connector.mapping import load_mapping
    from connector.ops.health import HealthServer, Heartbeat
    from connector.ops.logs import configure_logging_from
    from connector.ops.metrics import METRICS

    faulthandler.register(signal.SIGUSR1)  # on-call: `kill -USR1` prints every thread's stack
    settings = load_settings()
    configure_logging_from(settings)
    heartbeat = Heartbeat()
    service = IngestService(
        settings, load_mapping(settings.ingest.mapping_file), metrics=METRICS, heartbeat=heartbeat
    )

    def readiness() -> str | None:
        if service.ready.is_set() and service.stores:
            return None
        return "restoring the local state or no partitions assigned"

    health = HealthServer.from_settings(settings.ops, METRICS, readiness, heartbeat).start()
    stop = threading.Event()
    # SIGTERM (Kubernetes) and Ctrl-C: finish or abort the batch in flight, then leave cleanly.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    daily: threading.Thread | None = None
    try:
        service.start()
        print(f"ingest: started; health and metrics on port {health.port}", flush=True)
        if settings.snapshot.enabled:  # the daily snapshot runs beside ingest, on its own thread
            from connector.snapshot.service import build_scheduler

            scheduler = build_scheduler(settings, stop, metrics=METRICS)
            daily = threading.Thread(target=scheduler.run_forever, name="snapshot-scheduler", daemon=True)
            daily.start()
        service.run(stop)
        if daily is not None:  # a run in progress leaves at its next safe point and frees its lease
            daily.join(_SNAPSHOT_STOP_S)
    finally:
        health.stop()
    print(f"ingest: stopped after {service.counts['events']} events", flush=True)
    return 0


def _add_replay(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "replay",
        help="run captured events through decode -> map -> resolve in memory and print the final state",
        description=(
            "Input: one JSON object per line, {topic, partition, offset, key, value} where key and value are "
            "the message's JSON (value null for a tombstone), or key_b64/value_b64 for binary messages, "
            "and optional headers {name: JSON}. Exit 0 when it ran, even with dead letters."
        ),
    )
    p.add_argument("--mapping", required=True, help="the mapping YAML file")
    p.add_argument("--input", required=True, help="the events file (JSON Lines)")
    p.add_argument("--schema-registry", default=None, help="Schema Registry URL for Avro topics")
    p.add_argument("--json", action="store_true", help="one JSON object per line, for scripts")
    p.set_defaults(handler=_cmd_replay)


def _cmd_replay(args: argparse.Namespace) -> int:
    from collections import Counter

    from connector.mapping import load_mapping
    from connector.model import ENTITY_NAMES
    from connector.replay import encode_json, read_events, replay

    result = replay(
        load_mapping(args.mapping), read_events(args.input), schema_registry_url=args.schema_registry
    )
    out = sys.stdout.buffer
    if args.json:
        for entity, entity_id, record in result.live:
            out.write(encode_json({"entity": entity, "entity_id": entity_id, "record": record}) + b"\n")
        for dead in result.dead_letters:
            out.write(encode_json({"dead_letter": dead.as_json()}) + b"\n")
        return 0
    counts = Counter(entity for entity, _, _ in result.live)
    print("live entities:")
    for name in ENTITY_NAMES:
        print(f"  {name:<14} {counts.get(name, 0):>8}")
    print(f"stale or duplicate changes ignored: {result.stale}; tombstones skipped: {result.tombstones}")
    print(f"dead letters: {len(result.dead_letters)}")
    for dead in result.dead_letters:
        p = dead.position
        print(f"  {p.topic}[{p.partition}]@{p.offset}: {dead.error} ({dead.reason})")
    return 0


def _add_schemas(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("schemas", help="list the entity schemas and their fingerprints")
    p.set_defaults(handler=_cmd_schemas)


def _cmd_schemas(args: argparse.Namespace) -> int:
    from connector.model import ENTITY_NAMES, fingerprint

    for name in ENTITY_NAMES:
        print(f"{name:<14} {fingerprint(name)}")
    return 0


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
