"""The faust-streaming baseline of ``bench/ingest.py``: decode each event, keep its row in a Table.

Runs in its own process (faust owns an event loop, signal handlers and a worker), and is not
a runtime dependency: ``faust-streaming`` is pyproject's pinned ``bench`` extra, installed from
requirements/bench.lock by ``make bench-deps``; nothing is installed at run time, and without it
``require_faust`` stops the benchmark with that command. The child writes
``{"events": n, "seconds": s}`` to a result file (faust takes over stdout), timed from the first
event it processed to the last one counted (so its group join and table recovery are left out),
then stops itself with SIGTERM (faust's own graceful shutdown); the parent kills its process
group if it is still there after the bound.

    python bench/_faust_baseline.py BOOTSTRAP TOPIC EVENTS SECONDS GUARANTEE RESULT_FILE
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

PACKAGE = "faust-streaming"
INSTALL = "make bench-deps"


def require_faust() -> None:
    """Stop, naming the make target that installs it, when faust-streaming is not installed."""
    try:
        import faust  # noqa: F401  # only checks that it is there
    except ImportError as exc:
        raise SystemExit(
            f"{PACKAGE} (the faust baseline) is not installed in {sys.prefix}: run `{INSTALL}` "
            f"(pinned in requirements/bench.lock), or pass --no-faust ({exc})"
        ) from None


def faust_rate(
    bootstrap: str, topic: str, events: int, seconds: float, guarantee: str
) -> tuple[float | None, str]:
    """(events/s or None, what happened) of a faust agent over ``topic``, bounded in time."""
    require_faust()
    with tempfile.TemporaryDirectory(prefix="bench-faust-") as tmp:
        result_file = Path(tmp) / "result.json"
        args = [bootstrap, topic, str(events), str(seconds), guarantee, str(result_file)]
        child = subprocess.Popen(
            [sys.executable, __file__, *args],
            cwd=tmp,  # faust's data dir goes there
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            _, err = child.communicate(timeout=seconds + 90)  # + start-up, join and recovery
        except subprocess.TimeoutExpired:
            return None, f"faust worker did not finish in {seconds + 90:.0f} s"
        finally:  # timed out, or the bench itself interrupted: leave no worker behind
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.communicate()
        if not result_file.is_file():
            return None, f"faust worker exited {child.returncode}: {err.strip()[-500:]}"
        result = json.loads(result_file.read_text())
    if result["events"] < 2:
        return None, f"faust processed {result['events']} events in {seconds:.0f} s"
    return result["events"] / result["seconds"], f"{result['events']:,} events, {guarantee}"


def _worker(bootstrap: str, topic: str, events: int, seconds: float, guarantee: str, result: Path) -> None:
    import faust
    import orjson

    app = faust.App(
        f"bench-faust-{uuid.uuid4().hex[:8]}",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        processing_guarantee=guarantee,
        topic_partitions=3,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
    )
    source = app.topic(topic, key_serializer="raw", value_serializer="raw")
    rows = app.Table("rows", partitions=3)  # app defaults: raw keys, JSON values
    seen: dict[str, Any] = {"count": 0, "first": 0.0, "last": 0.0, "done": False}

    def finish() -> None:
        if not seen["done"]:
            seen["done"] = True
            elapsed = seen["last"] - seen["first"]
            result.write_text(json.dumps({"events": seen["count"] - 1, "seconds": elapsed}))
            os.kill(os.getpid(), signal.SIGTERM)  # the worker's own graceful shutdown

    @app.agent(source)
    async def ingest(stream: Any) -> None:
        async for key, value in stream.items():
            if value is not None:  # a tombstone carries nothing to keep
                doc = orjson.loads(value)
                rows[key] = doc["after"]
            now = time.perf_counter()
            if seen["count"] == 0:
                seen["first"] = now
            seen["count"] += 1
            seen["last"] = now
            if seen["count"] >= events:
                finish()

    @app.timer(1.0)  # type: ignore[untyped-decorator]
    async def deadline() -> None:
        if seen["count"] and time.perf_counter() - seen["first"] >= seconds:
            finish()

    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    _bootstrap, _topic, _events, _seconds, _guarantee, _result = sys.argv[1:7]
    _worker(_bootstrap, _topic, int(_events), float(_seconds), _guarantee, Path(_result))
