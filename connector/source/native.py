"""The native change envelope (``schemas/avro/ChangeEnvelope.avsc``) -> ``ChangeEvent``.

Producers that speak CareCloud's model directly send one schemaless Avro ``ChangeEnvelope``
per message (no registry header: the schema is the project's own, loaded through
``connector.model``). The envelope already names the entity, its id, the operation and a
per-entity ``SourceVersion``, so no table mapping or key parsing is involved; the message key
is not read (the envelope's ``EntityId`` is the identity).

Checks beyond the Avro schema, each a ``DecodeError`` naming the field: an UPSERT must carry
a ``Payload`` of the record type ``EntityType`` names, whose ``EntityId`` equals the
envelope's. A DELETE's row is just ``{"EntityId": ...}``; a payload sent with it anyway is
ignored, since ``Operation`` already says what to do.
"""

from __future__ import annotations

import datetime as dt
import io
from typing import Any, Final

import fastavro

from connector.errors import DecodeError
from connector.source._envelope import Headers
from connector.source.events import ChangeEvent, Op, Position
from connector.source.version import native_version

__all__ = ["NativeEnvelopeDecoder"]

_OPS: Final = {"UPSERT": Op.UPDATE, "DELETE": Op.DELETE}
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS: Final = dt.timedelta(milliseconds=1)


class NativeEnvelopeDecoder:
    """Decodes schemaless-Avro ``ChangeEnvelope`` messages."""

    def __init__(self) -> None:
        from connector.model import ENVELOPE_NAME, schema  # the model loads the .avsc files once

        self._schema = schema(ENVELOPE_NAME)

    def _read(self, value: bytes) -> dict[str, Any]:
        stream = io.BytesIO(value)
        try:
            record = fastavro.schemaless_reader(
                stream, self._schema, None, return_record_name=True, return_record_name_override=True
            )
        except Exception:  # fastavro fails many ways on foreign bytes; its messages quote values
            raise DecodeError("value is not a ChangeEnvelope record", reason="invalid_avro") from None
        if stream.tell() != len(value):
            raise DecodeError("value has trailing bytes after its ChangeEnvelope", reason="invalid_avro")
        if not isinstance(record, dict):  # pragma: no cover - a record schema reads as a dict
            raise DecodeError("value is not a ChangeEnvelope record", reason="invalid_avro")
        return record

    def decode(
        self, key: bytes | None, value: bytes | None, headers: Headers | None, position: Position
    ) -> ChangeEvent | None:
        """The change in one message; None for a tombstone (a null value)."""
        if value is None:
            return None
        record = self._read(value)
        entity, entity_id = record["EntityType"], record["EntityId"]
        op = _OPS[record["Operation"]]  # the enum admits no other symbol
        if not entity_id:
            raise DecodeError("EntityId is empty", reason="missing_entity_id")
        if op is Op.DELETE:
            row: dict[str, Any] = {"EntityId": entity_id}
        else:
            payload = record["Payload"]
            if payload is None:
                raise DecodeError("Payload is null on an UPSERT", reason="missing_row")
            type_name, row = payload
            if type_name.rpartition(".")[2] != entity:
                raise DecodeError(f"Payload is not a {entity} record", reason="payload_type_mismatch")
            if row.get("EntityId") != entity_id:
                raise DecodeError("Payload.EntityId differs from EntityId", reason="entity_id_mismatch")
        occurred = record["OccurredAt"]
        return ChangeEvent(
            position=position,
            table=entity,
            op=op,
            key=None,
            row=row,
            version=native_version(record["SourceVersion"], offset=position.offset),
            entity=entity,
            entity_id=entity_id,
            source_ts_ms=(occurred - _EPOCH) // _MS if isinstance(occurred, dt.datetime) else None,
        )
