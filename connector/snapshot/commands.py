"""``carecloud-connector snapshot``: run one date now, for real or as a dry run.

The scheduled run lives in the ingest process; this command is for operators: re-run a date
that failed, run today's snapshot early, or see what a run would deliver (``--dry-run``: the
same cut, checks and files, written to a local directory instead of the bucket, with the
plan printed). A date already published is reported and left alone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import orjson

from connector._table import table

__all__ = ["add_snapshot_command"]


def add_snapshot_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "snapshot",
        help="run the daily snapshot now, for today or a given date (settings: CARECLOUD_* env)",
    )
    p.add_argument("--date", type=dt.date.fromisoformat, default=None, help="snapshot date (default: today)")
    p.add_argument(
        "--dry-run", action="store_true", help="write files to --out instead of uploading; print the plan"
    )
    p.add_argument("--out", type=Path, default=Path("snapshot-dry-run"), help="directory for --dry-run")
    p.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="ENTITY",
        help="deliver ENTITY even if its count dropped beyond the allowed ratio (repeatable)",
    )
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(handler=_cmd_snapshot)


def _cmd_snapshot(args: argparse.Namespace) -> int:
    from connector.config import load_settings
    from connector.logs import configure_logging_from
    from connector.model import ENTITY_NAMES
    from connector.sinks.local import LocalStorage
    from connector.snapshot.exceptions import SnapshotArgumentError
    from connector.snapshot.service import build_run, schedule_of

    unknown = [name for name in args.override if name not in ENTITY_NAMES]
    if unknown:
        raise SnapshotArgumentError(f"--override: unknown entity {', '.join(unknown)}")
    settings = load_settings()
    configure_logging_from(settings)
    day = args.date or dt.datetime.now(dt.UTC).astimezone(schedule_of(settings).tz).date()
    storage = LocalStorage(args.out) if args.dry_run else None
    result = build_run(settings, storage=storage).run(day, overrides=args.override)
    manifest = result.manifest
    if args.json:
        sys.stdout.buffer.write((manifest.to_bytes() if manifest else orjson.dumps(None)) + b"\n")
        return 0
    print(f"snapshot {day}: {result.outcome.value}  (manifest {result.manifest_key})")
    if manifest is None:
        return 0
    rows = [
        [r.entity, r.status, r.route, r.records, r.held_out, r.bytes, r.key or "", r.reason or ""]
        for r in manifest.entities
    ]
    print(table(["entity", "status", "route", "records", "held out", "bytes", "key", "reason"], rows))
    lag = manifest.lag
    print(f"ingest lag at the cut: {lag.get('total', 0)} event(s); cut {manifest.cut.get('end_offsets')}")
    if args.dry_run:
        print(f"dry run: files, report and manifest are under {args.out.resolve()}")
    return 0
