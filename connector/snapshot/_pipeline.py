"""Run a generator on a second thread so formatting and compression use both cores (private).

Formatting a file is Python work that holds the GIL; gzip and the upload's socket writes
release it. With the formatting generator on a worker thread and compression plus upload on
the caller's, the two overlap (docs/decisions/0007 measured the split). The queue is bounded,
so memory stays at a few chunks; an error on the worker is re-raised in the caller; the caller
stopping early (an upload failure) stops the worker.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["in_background"]

T = TypeVar("T")
_DONE = object()


def in_background(items: Iterable[T], depth: int = 4) -> Iterator[T]:
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

    worker = threading.Thread(target=produce, name="snapshot-format", daemon=True)
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
