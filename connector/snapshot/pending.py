"""A held date's record (``_pending.json``): what is delivered while it waits for a decision.

Before the decision time a run that ends with an entity blocked or refused writes no manifest
(docs/decisions/0016) but this record: every entity's result so far, under the date's snapshot
id. It is replaced by each run of the date; a later run of the same cut takes the delivered
entities from it instead of sending them again (a committed Portal set, a verified file). It
holds results only: counts, keys, checksums and reasons, no record values and no EntityIds.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import asdict

import orjson

from connector.sinks.keys import control_key
from connector.sinks.storage import Storage
from connector.snapshot.manifest import EntityResult

__all__ = ["delivered_earlier", "hold"]

log = logging.getLogger(__name__)
_NAME = "_pending.json"


def delivered_earlier(
    storage: Storage, prefix: str, day: dt.date, snapshot_id: str
) -> dict[str, EntityResult]:
    """Entities an earlier run of this date and cut delivered before the date was held."""
    found = storage.get(control_key(prefix, day, _NAME))
    if found is None:
        return {}
    pending = orjson.loads(found[0])
    if pending.get("snapshot_id") != snapshot_id:
        return {}
    results = (EntityResult(**entity) for entity in pending["entities"])
    return {result.entity: result for result in results if result.status == "delivered"}


def hold(
    storage: Storage,
    prefix: str,
    day: dt.date,
    snapshot_id: str,
    results: Sequence[EntityResult],
    decide_by: dt.datetime,
    now: dt.datetime,
) -> None:
    """Record what is delivered and what waits, and say so in the log (entity names only)."""
    waiting = [r.entity for r in results if r.status != "delivered"]
    body = {
        "snapshot_id": snapshot_id,
        "day": day.isoformat(),
        "decide_by": decide_by.isoformat(),
        "updated_at": now.isoformat(),
        "entities": [asdict(result) for result in results],
    }
    storage.put_bytes(
        control_key(prefix, day, _NAME),
        orjson.dumps(body, option=orjson.OPT_INDENT_2),
        content_type="application/json",
    )
    log.warning(
        "snapshot %s held: %s blocked or refused; the manifest waits for an override or a fix until %s",
        day,
        ", ".join(waiting),
        decide_by.isoformat(timespec="minutes"),
    )
