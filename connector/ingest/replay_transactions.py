"""``replay`` and Debezium's transaction topic: its BEGIN/END records are read, never dead-lettered.

A capture of a Debezium deployment with ``provide.transaction.metadata=true`` holds the
``<prefix>.transaction`` topic beside the tables' topics. Its records are not row changes, so
decoding them as such would dead-letter every one (``unknown_op``). ``replay`` hands each message
to ``TransactionTally.boundary`` first: a record of the mapping's ``transactions.topic``, of a
topic named with ``--transaction-topic``, or of a topic the mapping does not list whose record
is a BEGIN or END (and no row change: it has no ``op``) is counted here; one of a
``--skip-topic`` is skipped. The data events' transaction blocks and the ENDs are then judged
as the snapshot judges the ledger (``connector.state.ledger.judge``): the summary says how many
transactions the capture holds whole, and which it does not.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import orjson

from connector.errors import DecodeError
from connector.mapping import EntityChange, MappingSpec
from connector.source import ChangeEvent, Position
from connector.source.transactions import decode_boundary
from connector.state.codec import state_key
from connector.state.ledger import (
    Ledger,
    TxEnd,
    encode_end,
    encode_ledger,
    end_key,
    group_id,
    judge,
    ledger_key,
)

__all__ = ["TransactionSummary", "TransactionTally"]


@dataclass
class TransactionSummary:
    """What the capture's transaction metadata says (``ReplayResult.transactions``)."""

    begins: int = 0
    ends: int = 0
    skipped: int = 0
    """Messages of ``--skip-topic`` topics, not read."""
    complete: int = 0
    incomplete: list[str] = field(default_factory=list)
    """Transaction ids with events in the capture but not all of them (or no END)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "begins": self.begins,
            "ends": self.ends,
            "skipped": self.skipped,
            "complete": self.complete,
            "incomplete": self.incomplete,
        }


def _looks_like_boundary(value: bytes | None) -> bool:
    """A BEGIN or END record (wrapped in a schema or not), and not a row change."""
    if value is None or b'"status"' not in value:
        return False
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return False
    if isinstance(doc, dict) and len(doc) == 2 and "schema" in doc and "payload" in doc:
        doc = doc["payload"]
    return isinstance(doc, dict) and doc.get("status") in ("BEGIN", "END") and "op" not in doc


class TransactionTally:
    """The replay's view of the transaction topic and of the events' transaction blocks."""

    def __init__(
        self,
        spec: MappingSpec,
        *,
        transaction_topics: Collection[str] = (),
        skip_topics: Collection[str] = (),
    ) -> None:
        self._spec = spec
        self._topics = set(transaction_topics) | (
            {spec.transaction_topic} if spec.transaction_topic else set()
        )
        self._skip = set(skip_topics)
        self._ledgers: dict[str, Ledger] = {}
        self._ends: dict[str, TxEnd] = {}
        self.summary = TransactionSummary()

    def boundary(
        self, position: Position, value: bytes | None, dead_letter: Callable[[DecodeError], None]
    ) -> bool:
        """Whether the message is the tally's (counted, skipped or dead-lettered here) rather
        than a row change for the decoders."""
        topic = position.topic
        if topic in self._skip:
            self.summary.skipped += 1
            return True
        if topic not in self._topics and (topic in self._spec.topics or not _looks_like_boundary(value)):
            return False
        try:
            found = decode_boundary(value)
        except DecodeError as exc:
            dead_letter(exc)
            return True
        if found is None:
            return True
        if found.status == "BEGIN" or found.event_count is None:
            self.summary.begins += 1
            return True
        self.summary.ends += 1
        txid = group_id(found.id)
        self._ends[txid] = TxEnd(txid, found.event_count, found.collections)
        return True

    def event(self, event: ChangeEvent, change: EntityChange) -> None:
        """A data event applied (or stale): its transaction block, when it has one."""
        tx = event.transaction
        if tx is None:
            return
        txid = group_id(tx.id)
        ledger = self._ledgers.setdefault(txid, Ledger())
        ledger.note(
            event.table, tx.data_collection_order, state_key(change.entity, change.entity_id).decode()
        )

    def finish(self) -> TransactionSummary:
        """Judge every transaction seen with events (as the snapshot would at a cut), when the
        capture holds the transaction topic at all (without it nothing can be judged)."""
        if not (self.summary.begins or self.summary.ends):
            return self.summary
        records = [(ledger_key(t, 0), encode_ledger(ledger)) for t, ledger in self._ledgers.items()]
        records += [(end_key(t), encode_end(end)) for t, end in self._ends.items()]
        for verdict in judge(records, tables=self._spec.tables, now_ms=0, horizon_ms=0):
            if verdict.complete:
                self.summary.complete += 1
            else:
                self.summary.incomplete.append(verdict.txid)
        return self.summary
