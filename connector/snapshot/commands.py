"""``carecloud-connector snapshot``: run one date now, for real or as a dry run.

The scheduled run lives in the ingest process; this command is for operators: re-run a date
that failed, run today's snapshot early, or see what a run would deliver (``--dry-run``: the
same cut, checks and files, written to a local directory with no side effect anywhere,
``connector.snapshot.dry_run``). A date already published is reported and left alone.

The exit status says how the date stands, so a CronJob or a script notices trouble: 0 only
when the date is published with every entity delivered.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from connector._table import table

if TYPE_CHECKING:
    from connector.sinks.storage import Storage
    from connector.snapshot.manifest import Manifest

__all__ = ["EXIT_PARTIAL", "add_snapshot_command", "exit_status"]

EXIT_PARTIAL = 4
"""The manifest is written (or, in a dry run, would be) but an entity was blocked by a check or
refused by its route: CareCloud lacks it for the date."""
_EPILOG = """exit status:
  0  the date is published and every entity was delivered (or would be, with --dry-run)
  1  the run failed: nothing was published (the error is printed; run again once fixed)
  2  bad arguments
  3  an unexpected error (a bug; --debug shows the traceback)
  4  published, but an entity was blocked or refused (see the table and the report)"""


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
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(handler=_cmd_snapshot)


def _cmd_snapshot(args: argparse.Namespace) -> int:
    from connector.config import load_settings
    from connector.logs import configure_logging_from
    from connector.model import ENTITY_NAMES
    from connector.sinks.local import LocalStorage
    from connector.snapshot.dry_run import DryRunApi, DryRunStorage
    from connector.snapshot.exceptions import SnapshotArgumentError
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
    result = run.run(day, overrides=args.override)
    manifest = result.manifest
    status = exit_status(result.manifest)
    if args.json:
        sys.stdout.buffer.write((manifest.to_bytes() if manifest else orjson.dumps(None)) + b"\n")
        return status
    print(f"snapshot {day}: {result.outcome.value}  (manifest {result.manifest_key})")
    if manifest is None:
        return status
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
        for r in manifest.entities
    ]
    headers = ["entity", "status", "route", "records", "held out", "added", "removed", "changed", "since"]
    print(table([*headers, "bytes", "key", "reason"], rows))
    lag = manifest.lag
    print(f"ingest lag at the cut: {lag.get('total', 0)} event(s); cut {manifest.cut.get('end_offsets')}")
    if args.dry_run:
        print(
            f"dry run: nothing was sent; files, API sets, report and manifest are under {args.out.resolve()}"
        )
    return status


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
