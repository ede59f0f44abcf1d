"""Debezium's transaction topic: BEGIN and END records of each source transaction.

With ``provide.transaction.metadata=true`` Debezium writes ``<topic.prefix>.transaction``: a
BEGIN when a transaction starts and an END with its ``event_count`` and, per table
(``data_collections``), how many events it sent. These are not row changes: ingest reads the END
into the transaction ledger (``connector.state.ledger``), which the snapshot's cut uses to never
deliver a transaction half-applied; ``replay`` reads them too. JSON, with or without the
converter's schema wrapper (Avro transaction topics are not supported).

A malformed record raises ``DecodeError`` with reason ``bad_transaction_record``: it is a dead
letter like any other bad input, and its reason never quotes a value.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import orjson

from connector.errors import DecodeError
from connector.source.limits import check_nesting

__all__ = ["BAD_RECORD", "Boundary", "decode_boundary"]

BAD_RECORD = "bad_transaction_record"
"""The dead-letter reason of a record of the transaction topic that is neither BEGIN nor END."""


class Boundary(NamedTuple):
    """One BEGIN or END record of the transaction topic."""

    status: Literal["BEGIN", "END"]
    id: str
    """Debezium's ``id`` (PostgreSQL ``"<txId>:<lsn>"``: ``ledger.group_id`` groups it)."""
    event_count: int | None
    """END: the events the transaction sent (tombstones excluded); BEGIN: None."""
    collections: dict[str, int]
    """END: events per table (``schema.table`` / ``db.table``); BEGIN: empty."""


def _problem(what: str) -> DecodeError:
    return DecodeError(f"transaction record: {what}", reason="bad_transaction_record")


def decode_boundary(value: bytes | None) -> Boundary | None:
    """The record's BEGIN or END, or None for a tombstone; ``DecodeError`` if it is neither."""
    if value is None:
        return None
    try:
        doc: Any = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise _problem("not valid JSON") from None
    check_nesting(doc, value.count(b"{") + value.count(b"["), "value")
    if isinstance(doc, dict) and len(doc) == 2 and "schema" in doc and "payload" in doc:
        doc = doc["payload"]
    if not isinstance(doc, dict):
        raise _problem("not an object")
    status, tx_id = doc.get("status"), doc.get("id")
    if status not in ("BEGIN", "END") or not isinstance(tx_id, str) or not tx_id:
        raise _problem("status is not BEGIN/END, or id is missing")
    if status == "BEGIN":
        return Boundary("BEGIN", tx_id, None, {})
    count, raw = doc.get("event_count"), doc.get("data_collections")
    if type(count) is not int or count < 0 or not isinstance(raw, list):
        raise _problem("END without an event_count or data_collections")
    collections: dict[str, int] = {}
    for item in raw:
        name = item.get("data_collection") if isinstance(item, dict) else None
        n = item.get("event_count") if isinstance(item, dict) else None
        if not isinstance(name, str) or type(n) is not int or n < 0:
            raise _problem("a data_collections entry without a name or event_count")
        collections[name] = collections.get(name, 0) + n
    return Boundary("END", tx_id, count, collections)
