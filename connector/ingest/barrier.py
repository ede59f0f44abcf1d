"""The per-message failure barrier: a message ends applied or dead-lettered, whatever it holds.

Kafka Connect's ``errors.tolerance=all`` is the model. Handling one message (decode, map,
merge, encode its state row) may fail in two kinds of way, and only the exception's class
tells them apart:

- **the message's fault**, including faults nobody foresaw: a ``BadInputError`` carries its
  own reason; any other exception (a ``TypeError`` deep in a library, a ``RecursionError``, a
  panic in the compiled extension) is a bug met by this message, and the message goes to the
  dead-letter topic as ``internal_error`` with the exception's class name, never its text,
  which may quote values. Before this barrier one such message stopped the ingest, and
  every restart re-read the same offset and stopped again (issue 16).
- **the loop's business**: Kafka and I/O failures, the connector's own non-input errors (a
  store that cannot be written, a broker away) and ``MemoryError``. These say nothing about
  the message; the loop aborts, rewinds, retries or stops as before.

``ingest``, ``replay`` and ``dlq replay`` all ask ``dead_letter_cause``, so the three agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import KafkaException

from connector.errors import BadInputError, ConnectorError

__all__ = ["INTERNAL_REASON", "Cause", "dead_letter_cause"]

INTERNAL_REASON = "internal_error"
"""The reason of a dead letter that met a bug: each one is worth an alert of its own."""

_LOOP_ERRORS: tuple[type[BaseException], ...] = (
    ConnectorError,  # what is left after BadInputError: transient, store, config, terminal
    KafkaException,
    BufferError,  # the producer's queue is full: back-pressure, not the message
    OSError,
    MemoryError,
)


@dataclass(frozen=True, slots=True)
class Cause:
    """Why a message is a dead letter: the exception's class name and a reason code."""

    error: str
    reason: str


def dead_letter_cause(exc: BaseException) -> Cause | None:
    """The dead letter ``exc`` makes of the message being handled; None: re-raise it.

    A Rust panic in the extension arrives as pyo3's ``PanicException``, which derives from
    ``BaseException`` so that ordinary handlers miss it; it is the message's, not the loop's.
    """
    if isinstance(exc, BadInputError):
        return Cause(type(exc).__name__, exc.reason)
    if isinstance(exc, _LOOP_ERRORS):
        return None
    if isinstance(exc, Exception) or type(exc).__name__ == "PanicException":
        return Cause(type(exc).__name__, INTERNAL_REASON)  # the name only: its text may quote values
    return None  # KeyboardInterrupt, SystemExit, GeneratorExit: the process is stopping
