"""Run a generator on another thread so formatting, compression and upload overlap (private).

A file goes through three stages: formatting (the compiled CSV writer releases the GIL; the
Python writers hold it), gzip (``gzip_chunks``, itself on two threads; zlib releases the GIL)
and the upload's socket writes. Each stage on its own thread keeps both cores busy: with
compression on the uploading thread, the compressing threads starved while a 16 MiB part was
being sent (docs/decisions/0013 measured it). The queues are bounded, so memory stays at a
few chunks; an error on a worker is re-raised in the caller; the caller stopping early (an
upload failure) stops the worker.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["in_background"]

T = TypeVar("T")
_DONE = object()


def in_background(items: Iterable[T], depth: int = 4, name: str = "snapshot-format") -> Iterator[T]:
    """Yield ``items`` produced on a daemon thread, at most ``depth`` ahead of the consumer."""
    buffer: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        buffer.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as exc:  # re-raised on the consumer's thread
            failure.append(exc)
        finally:
            buffer.put(_DONE)

    worker = threading.Thread(target=produce, name=name, daemon=True)
    worker.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                break
            yield item  # type: ignore[misc]
        if failure:
            raise failure[0]
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                buffer.get_nowait()
            except queue.Empty:
                worker.join(0.05)
