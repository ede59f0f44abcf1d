"""Canary values seeded into the synthetic Debezium stream: one family nobody else could have.

A distinctive family name, EntityId and amount go into one good event (so they reach the state
and the delivered file: the positive control) and into malformed events the connector must
dead-letter (so error paths carry them too). A test then looks for every spelling of them in
every log line and metric the run produced: none may appear.
"""

from __future__ import annotations

import base64
import time
from decimal import Decimal
from typing import Any

import orjson

from connector.devtools._synthetic_render import envelope
from connector.devtools.synthetic import SyntheticEvent, SyntheticStream

__all__ = [
    "CANARY_AMOUNT",
    "CANARY_DEAD_LETTERS",
    "CANARY_ID",
    "CANARY_NAME",
    "canary_events",
    "leaks",
]

CANARY_FAMILY = 900_000_123_457
CANARY_ID = f"FAM-{CANARY_FAMILY}"
CANARY_NAME = "Zebulon Canaryfield"
CANARY_EMAIL = "zebulon.canaryfield@example.org"
CANARY_AMOUNT = Decimal("98765.43")
CANARY_DEAD_LETTERS = {
    "unknown_enum_symbol": 1,
    "unparseable_decimal": 1,
    "invalid_json": 1,
    "key_mismatch": 1,
}
"""The malformed canary events by the dead-letter reason each must get."""
_LSN = 90_000_000


def _money(value: Decimal) -> str:
    """Debezium's precise decimal at scale 2: base64 of the unscaled two's complement."""
    unscaled = int(value.scaleb(2))
    return base64.b64encode(unscaled.to_bytes((unscaled.bit_length() + 8) // 8, "big", signed=True)).decode()


SPELLINGS = (
    CANARY_NAME,
    "Zebulon",
    "canaryfield",  # case-insensitive below: also the e-mail address
    CANARY_ID,
    str(CANARY_FAMILY),
    str(CANARY_AMOUNT),
    _money(CANARY_AMOUNT),
)
"""Every form a canary could take in output: as delivered, as on the wire, the bare key."""


def leaks(text: str) -> list[str]:
    """The canary spellings found in ``text`` (case-insensitive)."""
    lowered = text.lower()
    return [s for s in SPELLINGS if s.lower() in lowered]


def canary_events(stream: SyntheticStream) -> list[SyntheticEvent]:
    """One good create of the canary family, then the malformed ones (on the family topic)."""
    topic = stream.topic_prefix + "family"
    template = next(e for e in stream.events() if e.topic == topic and e.value is not None)
    after: dict[str, Any] = orjson.loads(template.value or b"")["after"]
    after |= {
        "family_id": CANARY_FAMILY,
        "family_name": CANARY_NAME,
        "email": CANARY_EMAIL,
        "deductible": _money(CANARY_AMOUNT),
        "status": "A",
    }
    key = orjson.dumps({"family_id": CANARY_FAMILY})
    now = time.time()

    def event(row: dict[str, Any], tx: int, *, key: bytes = key) -> SyntheticEvent:
        value = envelope("family", "c", None, row, _LSN + tx * 100, _LSN + tx * 100 + 10, tx, (1, 1), now)
        return SyntheticEvent(topic, key, value)

    good = event(after, 1)
    truncated = event(after, 5).value or b""
    cut = truncated.index(CANARY_NAME.encode()) + len(CANARY_NAME)
    return [
        good,
        event({**after, "status": "Q"}, 2),  # unknown_enum_symbol
        event({**after, "deductible": str(CANARY_AMOUNT)}, 3),  # unparseable_decimal
        event({**after, "family_id": CANARY_FAMILY + 1}, 4),  # key_mismatch
        SyntheticEvent(topic, key, truncated[:cut]),  # invalid_json, cut right after the name
    ]
