"""The native ChangeEnvelope: schemaless Avro of ``schemas/avro/ChangeEnvelope.avsc``."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import fastavro
import pytest

from connector.errors import BadInputError
from connector.model import ENTITY_NAMES, encode, schema
from connector.model.samples import sample_envelope
from connector.source import DecodeError, NativeEnvelopeDecoder, Op, Position
from connector.source.version import native_version
from tests.unit.source.source_helpers import CANARY, assert_no_canary

POSITION = Position("carecloud.native", 3, 41)


def raw_envelope(record: dict[str, Any]) -> bytes:
    """Encode without the model's checks, to build envelopes the model would refuse."""
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema("ChangeEnvelope"), record)
    return buffer.getvalue()


@pytest.mark.parametrize("entity", ENTITY_NAMES)
def test_upsert_of_every_entity(entity: str) -> None:
    envelope = sample_envelope(entity, "UPSERT", version=7)
    event = NativeEnvelopeDecoder().decode(None, encode("ChangeEnvelope", envelope), None, POSITION)
    assert event is not None
    assert (event.entity, event.entity_id, event.table) == (entity, envelope["EntityId"], entity)
    assert event.op is Op.UPDATE
    assert event.row == envelope["Payload"]
    assert event.version == native_version(7, offset=41)
    assert event.key is None
    assert event.source_ts_ms == int(envelope["OccurredAt"].timestamp() * 1000)


def test_delete_row_is_the_entity_id() -> None:
    envelope = sample_envelope("Family", "DELETE", version=9)
    event = NativeEnvelopeDecoder().decode(b"ignored", encode("ChangeEnvelope", envelope), None, POSITION)
    assert event is not None
    assert (event.op, event.row, event.entity_id) == (Op.DELETE, {"EntityId": "fam-0001"}, "fam-0001")


def test_tombstone() -> None:
    assert NativeEnvelopeDecoder().decode(b"fam-0001", None, None, POSITION) is None


def reject(value: bytes) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        NativeEnvelopeDecoder().decode(None, value, None, POSITION)
    assert isinstance(info.value, BadInputError)
    assert_no_canary(info.value)
    return info.value


def canary_family() -> dict[str, Any]:
    envelope = sample_envelope("Family")
    envelope["Payload"] = {**envelope["Payload"], "FamilyName": CANARY}
    return envelope


def test_payload_of_another_entity_type() -> None:
    envelope = canary_family()
    member = sample_envelope("FamilyMember")["Payload"]
    raw = raw_envelope({**envelope, "Payload": ("com.carecloud.entities.FamilyMember", member)})
    assert reject(raw).reason == "payload_type_mismatch"


def test_payload_entity_id_differs() -> None:
    envelope = canary_family()
    envelope["EntityId"] = CANARY
    assert reject(raw_envelope(envelope)).reason == "entity_id_mismatch"


def test_upsert_without_payload() -> None:
    envelope = {**canary_family(), "Payload": None}
    assert reject(raw_envelope(envelope)).reason == "missing_row"


def test_empty_entity_id() -> None:
    envelope = {**sample_envelope("Family", "DELETE"), "EntityId": ""}
    assert reject(raw_envelope(envelope)).reason == "missing_entity_id"


def test_garbage_truncated_and_trailing_bytes() -> None:
    good = raw_envelope(canary_family())
    assert reject(good[:-5]).reason == "invalid_avro"
    assert reject(good + b"\x00").reason == "invalid_avro"
    assert reject(b"\x7f" + CANARY.encode()).reason == "invalid_avro"
    assert reject(b"").reason == "invalid_avro"


def test_occurred_at_is_milliseconds() -> None:
    envelope = sample_envelope("Provider")
    envelope["OccurredAt"] = dt.datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=dt.UTC)
    event = NativeEnvelopeDecoder().decode(None, encode("ChangeEnvelope", envelope), None, POSITION)
    assert event is not None
    assert event.source_ts_ms == -1
