"""Run one dev-tool process in the foreground until Ctrl-C or SIGTERM (``... run`` commands)."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

__all__ = ["serve"]


class Served(Protocol):
    """What the Kafka broker and the Connect worker have in common."""

    @property
    def work_dir(self) -> Path: ...

    @property
    def running(self) -> bool: ...

    def start(self) -> object: ...

    def log_tail(self) -> str: ...

    def close(self) -> None: ...


def serve(process: Served, name: str, describe: Callable[[], Iterable[str]]) -> int:
    """Start ``process``, print ``describe()``, wait: 0 on Ctrl-C/SIGTERM, 1 if it died.

    Not ``with``: a Ctrl-C during ``start()`` must stop the JVM too. SIGINT is installed as
    well because a shell's background job ignores it."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)
    try:
        process.start()
        for line in describe():
            print(line)
        print(f"work dir {process.work_dir}; Ctrl-C stops the {name}", flush=True)
        while process.running:
            time.sleep(0.5)
        print(f"{name} died\n{process.log_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        process.close()
