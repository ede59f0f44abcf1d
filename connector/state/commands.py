"""``carecloud-connector rebuild-store``: the local store rebuilt from the state topic.

It acts on the state's Kafka topic and local store, with the deployment's settings
(``CARECLOUD_*``). Output names partitions and counts; never a key, a value or an EntityId.
The dead-letter commands are the ingest's (``connector.ingest.commands``).
"""

from __future__ import annotations

import argparse
import sys
import time

import orjson

from connector._table import table

__all__ = ["add_rebuild_store_command"]


def add_rebuild_store_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "rebuild-store",
        help="delete the local store of some or all partitions and rebuild it from the state topic",
        description="Refuses, deleting nothing, while another process (a running ingest) holds a store. "
        "Default partitions: those with a store under CARECLOUD_INGEST_STATE_DIR, or every partition "
        "of the state topic when there is none.",
    )
    p.add_argument(
        "--partition", type=int, action="append", default=None, metavar="N", help="partition (repeatable)"
    )
    p.add_argument("--json", action="store_true", help="print the counts as one JSON object")
    p.set_defaults(handler=_cmd_rebuild)


def _cmd_rebuild(args: argparse.Namespace) -> int:
    from connector._progress import Progress
    from connector.config import load_settings
    from connector.ops.logs import configure_logging_from
    from connector.state.exceptions import TopicConfigError
    from connector.state.rebuild import existing_partitions, rebuild_stores, state_partitions

    settings = load_settings()
    configure_logging_from(settings)
    base, topic, state_dir = (
        settings.kafka.client_config(),
        settings.ingest.state_topic,
        settings.ingest.state_dir,
    )
    count = state_partitions(base, topic)
    partitions = sorted(set(args.partition or existing_partitions(state_dir) or range(count)))
    beyond = [p for p in partitions if not 0 <= p < count]
    if beyond:
        raise TopicConfigError(f"state topic {topic} has partitions 0..{count - 1}; no partition {beyond[0]}")
    bars: dict[int, Progress] = {}

    def progress(partition: int, done: int, total: int) -> None:
        bar = bars.get(partition)
        if bar is None:
            bar = bars[partition] = Progress(f"partition {partition}", total)
        bar.update(done)

    started = time.monotonic()
    rows = rebuild_stores(base, topic, state_dir, partitions, progress)
    for p, n in rows.items():
        bar = bars.get(p) or Progress(f"partition {p}", 0)
        bar.finish(f"rebuilt: {n:,} rows")
    total = sum(rows.values())
    if args.json:
        doc = {"state_topic": topic, "partitions": {str(p): n for p, n in rows.items()}, "rows": total}
        sys.stdout.buffer.write(orjson.dumps(doc) + b"\n")
    else:
        print(table(["partition", "rows"], [[p, n] for p, n in rows.items()]))
        print(
            f"rebuilt {len(rows)} store(s) under {state_dir} from {topic}: "
            f"{total:,} rows in {time.monotonic() - started:.1f} s"
        )
    return 0
