"""The streaming gzip of the snapshot files (private to ``connector.sinks.formats``).

One gzip member compressed on several threads at once, as pigz does, so compression keeps pace
with formatting on two cores; ``formats`` re-exports ``gzip_chunks`` and ``DEFAULT_GZIP_LEVEL``.
"""

from __future__ import annotations

import collections
import struct
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from connector.sinks.exceptions import SinkConfigError

__all__ = ["DEFAULT_GZIP_LEVEL", "GZIP_BLOCK", "gzip_chunks"]

DEFAULT_GZIP_LEVEL = 6
"""Chosen by measurement: docs/decisions/0007-snapshot-schedule-and-routing.md."""
GZIP_BLOCK = 1 << 20
"""Bytes of input compressed per task by ``gzip_chunks`` (pigz uses 128 KiB; larger blocks
mean fewer hand-offs between threads for the same output size)."""
_WINDOW = 32 * 1024
"""Deflate's window: each block is compressed with the previous block's last 32 KiB as its
dictionary, so splitting costs almost nothing in size."""


def gzip_chunks(
    chunks: Iterable[bytes], level: int = DEFAULT_GZIP_LEVEL, *, threads: int = 2
) -> Iterator[bytes]:
    """Gzip a stream of chunks into a stream of chunks: one gzip member (RFC 1952), compressed
    on ``threads`` threads at once, as pigz does.

    The input is cut into ``GZIP_BLOCK``-byte blocks; each is deflated on its own, primed with
    the previous block's last 32 KiB, and ends with a sync flush (the last with the final
    block), so the blocks concatenate into one ordinary deflate stream any gzip reader takes.
    zlib releases the GIL while it compresses, so the blocks really run in parallel: gzip level
    6 costs about twice what formatting costs, and on two cores this halves it (docs/decisions/
    0013). The bytes depend only on the input and the level, not on the chunking or the thread
    count; the header has no file name and mtime 0, so a rebuilt state gives the same file.
    """
    if not 0 <= level <= 9:
        raise SinkConfigError("gzip level must be between 0 and 9")
    xfl = 2 if level == 9 else 4 if level < 2 else 0
    yield b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + bytes([xfl, 255])  # no name, mtime 0, OS unknown
    crc, size = 0, 0
    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="gzip") as pool:
        running: collections.deque[Future[bytes]] = collections.deque()
        previous = dictionary = b""
        for block in _blocks(chunks):
            if previous:
                running.append(pool.submit(_deflate, previous, level, dictionary, False))
            dictionary = previous[-_WINDOW:]
            previous = block
            crc, size = zlib.crc32(block, crc), size + len(block)
            while len(running) > 2 * threads or (running and running[0].done()):
                yield running.popleft().result()
        running.append(pool.submit(_deflate, previous, level, dictionary, True))
        while running:
            yield running.popleft().result()
    yield struct.pack("<II", crc, size & 0xFFFFFFFF)


def _blocks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The concatenated chunks in blocks of exactly ``GZIP_BLOCK`` bytes (the last shorter)."""
    pending = bytearray()
    for chunk in chunks:
        pending += chunk
        while len(pending) >= GZIP_BLOCK:
            yield bytes(pending[:GZIP_BLOCK])
            del pending[:GZIP_BLOCK]
    if pending:
        yield bytes(pending)


def _deflate(block: bytes, level: int, dictionary: bytes, last: bool) -> bytes:
    if dictionary:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -15, zdict=dictionary)
    else:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
    return compressor.compress(block) + compressor.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)
