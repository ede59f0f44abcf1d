"""``carecloud-connector snapshot``: run one date now, for real or as a dry run.

The scheduled run lives in the ingest process; this command is for operators: re-run a date
that failed, run today's snapshot early, or see what a run would deliver (``--dry-run``: the
same cut, checks and files, written to a local directory with no side effect anywhere,
``connector.snapshot.dry_run``). A date already published is reported and left alone.

The exit status says how the date stands, so a CronJob or a script notices trouble: 0 only
when the date is published with every entity delivered. Before the decision time, a date with
an entity blocked or refused is held open (exit 5): ``--override`` or a fix can still make it
complete tonight, and ``--final`` publishes it without the entity at once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from connector._table import table
from connector.ops.logs import log_context

if TYPE_CHECKING:
    from connector.sinks.storage import Storage
    from connector.snapshot.manifest import EntityResult, Manifest
    from connector.snapshot.run import RunResult

__all__ = ["EXIT_HELD", "EXIT_PARTIAL", "add_snapshot_command", "exit_status"]

EXIT_PARTIAL = 4
"""The manifest is written (or, in a dry run, would be) but an entity was blocked by a check or
refused by its route: CareCloud lacks it for the date."""
EXIT_HELD = 5
"""No manifest yet: an entity is blocked or refused and the date waits, until its decision time,
for ``--override`` or a fix; what could be delivered is delivered."""
_EPILOG = """exit status:
  0  the date is published and every entity was delivered (or would be, with --dry-run)
  1  the run failed: nothing was published (the error is printed; run again once fixed)
  2  bad arguments
  3  an unexpected error (a bug; --debug shows the traceback)
  4  published, but an entity was blocked or refused (see the table and the report)
  5  not published yet: an entity is blocked or refused and the date waits for --override or
     a fix until CARECLOUD_SNAPSHOT_DECISION_TIME (then the service publishes it without the
     entity); --final publishes it now without it"""


def add_snapshot_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "snapshot",
        help="run the daily snapshot now, for today or a given date (settings: CARECLOUD_* env)",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--date", type=dt.date.fromisoformat, default=None, help="snapshot date (default: today)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="no upload, no Portal call, no write to the bucket: files, API sets, report and the "
        "would-be manifest go to --out; earlier manifests are read for the checks",
    )
    p.add_argument("--out", type=Path, default=Path("snapshot-dry-run"), help="directory for --dry-run")
    p.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="ENTITY",
        help="deliver ENTITY even if its count dropped, or its records changed, beyond the allowed "
        "ratio (repeatable)",
    )
    p.add_argument(
        "--final",
        action="store_true",
        help="write the manifest now, without a blocked or refused entity, instead of waiting for "
        "an override or a fix until the decision time",
    )
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(handler=_cmd_snapshot)


def _cmd_snapshot(args: argparse.Namespace) -> int:
    from connector.config import load_settings
    from connector.model import ENTITY_NAMES
    from connector.ops.logs import configure_logging_from
    from connector.sinks.local import LocalStorage
    from connector.snapshot.dry_run import DryRunApi, DryRunStorage
    from connector.snapshot.exceptions import SnapshotArgumentError
    from connector.snapshot.run import Outcome
    from connector.snapshot.service import build_run, build_storage, schedule_of

    unknown = [name for name in args.override if name not in ENTITY_NAMES]
    if unknown:
        raise SnapshotArgumentError(f"--override: unknown entity {', '.join(unknown)}")
    settings = load_settings()
    configure_logging_from(settings)
    day = args.date or dt.datetime.now(dt.UTC).astimezone(schedule_of(settings).tz).date()
    if args.dry_run:
        real = build_storage(settings)  # read for its published manifests, never written
        storage: Storage | None = DryRunStorage(LocalStorage(args.out), real)
        api = DryRunApi(args.out) if settings.snapshot.api_enabled else None
        run = build_run(settings, storage=storage, api=api)
    else:
        run = build_run(settings)
    # A dry run shows the manifest a run would write now: it never waits for a decision.
    with log_context(snapshot_date=day):  # on every line the run logs on this thread
        result = run.run(day, overrides=args.override, final=args.final or args.dry_run)
    manifest = result.manifest
    if result.outcome is Outcome.HELD:
        return _held(result, args.json)
    status = exit_status(result.manifest)
    if args.json:
        sys.stdout.buffer.write((manifest.to_bytes() if manifest else orjson.dumps(None)) + b"\n")
        return status
    print(f"snapshot {day}: {result.outcome.value}  (manifest {result.manifest_key})")
    if manifest is None:
        return status
    _entities(manifest.entities)
    lag = manifest.lag
    print(f"ingest lag at the cut: {lag.get('total', 0)} event(s); cut {manifest.cut.get('end_offsets')}")
    if args.dry_run:
        print(
            f"dry run: nothing was sent; files, API sets, report and manifest are under {args.out.resolve()}"
        )
    return status


def _held(result: RunResult, as_json: bool) -> int:
    """A held date: what is delivered, what waits, and until when."""
    decide_by = result.decide_by.isoformat(timespec="minutes") if result.decide_by else None
    if as_json:
        body = {
            "outcome": result.outcome.value,
            "day": result.day.isoformat(),
            "decide_by": decide_by,
            "entities": [asdict(r) for r in result.pending],
        }
        sys.stdout.buffer.write(orjson.dumps(body) + b"\n")
        return EXIT_HELD
    waiting = ", ".join(r.entity for r in result.pending if r.status != "delivered")
    print(f"snapshot {result.day}: held, no manifest yet: {waiting} blocked or refused")
    _entities(result.pending)
    print(
        f"the date waits until {decide_by} (CARECLOUD_SNAPSHOT_DECISION_TIME) for a fix or "
        "`snapshot --date ... --override ENTITY`; then it is published without the entity "
        "(`--final` publishes it so now)"
    )
    return EXIT_HELD


def _entities(results: Iterable[EntityResult]) -> None:
    rows = [
        [
            r.entity,
            r.status,
            r.route,
            r.records,
            r.held_out,
            *_changes(r.changes),
            r.bytes,
            r.key or "",
            r.reason or "",
        ]
        for r in results
    ]
    headers = ["entity", "status", "route", "records", "held out", "added", "removed", "changed", "since"]
    print(table([*headers, "bytes", "key", "reason"], rows))


def _changes(changes: dict[str, object] | None) -> list[object]:
    """Added, removed, changed and the date compared with; blank for a first delivery."""
    if changes is None:
        return ["", "", "", "first"]
    return [changes["added"], changes["removed"], changes["changed"], changes["since"]]


def exit_status(manifest: Manifest | None) -> int:
    """0 when the date's manifest delivers every entity, ``EXIT_PARTIAL`` when it holds one back.

    A run that publishes nothing raises instead (exit 1, by the CLI); a date already published
    is judged by its manifest, so re-running a partial date keeps saying so.
    """
    if manifest is None or any(r.status != "delivered" for r in manifest.entities):
        return EXIT_PARTIAL
    return 0
