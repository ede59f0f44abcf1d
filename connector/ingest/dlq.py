"""The dead-letter topic: the headers ingest writes, and dead letters listed and replayed after a fix.

Three parts, one concern each: ``dead_letter`` (the record ingest writes, its ``carecloud.*``
headers, and one read back), ``dlq_read`` (committed dead letters read back and filtered:
``dlq list``) and ``dlq_replay`` (re-published to their original topic and partition after a
fix, only ever to one of the mapping's source topics: ``dlq replay``). Their docstrings say
why each works as it does. Their public names are importable from here, as before the split.
"""

from __future__ import annotations

from connector.ingest.dead_letter import (
    BY_REFERENCE_REASONS,
    DeadLetter,
    Headers,
    dead_letter_headers,
    from_message,
    replay_headers,
)
from connector.ingest.dlq_read import DlqFilter, read_dead_letters
from connector.ingest.dlq_replay import ReplayResult, Verdict, replay, verdict

__all__ = [
    "BY_REFERENCE_REASONS",
    "DeadLetter",
    "DlqFilter",
    "Headers",
    "ReplayResult",
    "Verdict",
    "dead_letter_headers",
    "from_message",
    "read_dead_letters",
    "replay",
    "replay_headers",
    "verdict",
]
