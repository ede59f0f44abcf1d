"""The converters' shortcuts for the common wire forms give what the general path gives.

Each converter takes the common form (days and epoch integers, base64 decimals at the
schema's scale, printable ASCII text) without its general checks, which run on the integer
instead. These properties compare the shortcut with the general path on the equivalent
value in another form (ISO text, a ``datetime``, a decimal string), errors included.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.mapping.convert import ConversionError, Converter, converter_for
from connector.mapping.spec import FieldSpec

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_SPAN = 200 * 366  # beyond the accepted 1800-2200 on both sides


def _conv(avro_type: Any, *, decimal: str = "precise", unit: str = "micros") -> Converter:
    conv, _ = converter_for(
        avro_type,
        FieldSpec("Field", column="field"),
        decimal_handling=decimal,  # type: ignore[arg-type]
        timestamp_unit=unit,  # type: ignore[arg-type]
    )
    return conv


def _outcome(conv: Converter, value: Any) -> Any:
    try:
        return conv(value)
    except ConversionError as exc:
        return ("error", exc.reason)


@settings(max_examples=400)
@given(st.integers(-_DAY_SPAN, _DAY_SPAN))
def test_days_since_epoch_equal_the_iso_date(days: int) -> None:
    conv = _conv({"type": "int", "logicalType": "date"})
    iso = (_EPOCH + timedelta(days=days)).date().isoformat()
    assert _outcome(conv, days) == _outcome(conv, iso)


@pytest.mark.parametrize(
    ("unit", "scale"), [("millis", 1_000), ("micros", 1_000_000), ("nanos", 1_000_000_000)]
)
@pytest.mark.parametrize("logical", ["timestamp-millis", "timestamp-micros"])
@settings(max_examples=150)
@given(seconds=st.integers(-_DAY_SPAN * 86_400, _DAY_SPAN * 86_400), fraction=st.integers(0, 10**9 - 1))
def test_epoch_integers_equal_the_datetime(
    unit: str, scale: int, logical: str, seconds: int, fraction: int
) -> None:
    conv = _conv({"type": "long", "logicalType": logical}, unit=unit)
    value = seconds * scale + fraction * scale // 10**9
    as_datetime = _EPOCH + timedelta(microseconds=value * 1_000_000 // scale)
    assert _outcome(conv, value) == _outcome(conv, as_datetime)


@pytest.mark.parametrize(("precision", "scale"), [(12, 2), (9, 0), (28, 10)])
@settings(max_examples=200)
@given(unscaled=st.integers(-(10**30), 10**30) | st.integers(-(10**13), 10**13))
def test_base64_decimals_equal_the_decimal_text(precision: int, scale: int, unscaled: int) -> None:
    avro = {"type": "bytes", "logicalType": "decimal", "precision": precision, "scale": scale}
    precise, text = _conv(avro, decimal="precise"), _conv(avro, decimal="string")
    raw = unscaled.to_bytes((unscaled.bit_length() + 8) // 8 or 1, "big", signed=True)
    expected = _outcome(text, str(Decimal(unscaled).scaleb(-scale)))
    assert _outcome(precise, base64.b64encode(raw).decode()) == expected


def test_text_that_is_not_base64_is_still_refused() -> None:
    conv = _conv({"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2})
    assert _outcome(conv, "AB=C") == ("error", "unparseable_decimal")
    assert _outcome(conv, "Zm9v!") == ("error", "unparseable_decimal")
    # Not ASCII: binascii raises a plain ValueError, which once escaped as an unhandled error
    # (the ingest stopped on it) instead of a dead letter.
    assert _outcome(conv, "caf\u00e9") == ("error", "unparseable_decimal")


@settings(max_examples=400)
@given(st.text(alphabet=st.characters(max_codepoint=0x3000)))
def test_strings_are_refused_exactly_when_they_hold_a_control_character(text: str) -> None:
    control = any((ord(c) < 32 and c not in "\t\n\r") or ord(c) == 127 for c in text)
    assert _outcome(_conv("string"), text) == (("error", "control_character") if control else text)
