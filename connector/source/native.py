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

Decimals are read as their raw bytes (the schema is read with their logical type removed)
and converted here, after a length check: fastavro's own conversion is quadratic in the
length (150 KB of bytes took 1.6 s of CPU) and rounds a value beyond the field's precision to
it instead of refusing it (a 20-byte ``decimal(12,2)`` became ``7.27885129180E+45``). Both
were found by the fuzzer (issue 16); such a value is ``decimal_out_of_range`` now.
"""

from __future__ import annotations

import datetime as dt
import decimal
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

        parsed = schema(ENVELOPE_NAME)
        # The entity records are named types the envelope refers to: parse each again without
        # its decimals, in definition order, then the envelope over them.
        named: dict[str, Any] = {}
        stripped = [_without_decimals(d) for d in parsed.get("__named_schemas", {}).values()]
        for definition in stripped:
            if definition.get("name") not in named and definition.get("type") in ("record", "enum", "fixed"):
                fastavro.parse_schema(definition, named_schemas=named)
        envelope = _without_decimals(parsed)
        self._schema = fastavro.parse_schema(envelope, named_schemas=named)
        self._decimals = _decimal_fields([envelope, *stripped])
        """Per entity record (short name): its decimal fields' (precision, scale)."""

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
            for field, (precision, scale) in self._decimals.get(entity, {}).items():
                raw = row.get(field)
                if raw is not None:
                    row[field] = _decimal(raw, precision, scale, field)
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


_DECIMAL_MARK: Final = "carecloud.decimal"


def _without_decimals(node: Any) -> Any:
    """A copy of a parsed schema whose decimals read as plain bytes (fastavro's bookkeeping
    keys dropped, so it parses again); each such type keeps its precision and scale."""
    if isinstance(node, dict):
        if node.get("logicalType") == "decimal":
            return {**{k: v for k, v in node.items() if k != "logicalType"}, _DECIMAL_MARK: True}
        return {k: _without_decimals(v) for k, v in node.items() if not k.startswith("__")}
    if isinstance(node, list):
        return [_without_decimals(item) for item in node]
    return node


def _decimal_fields(node: Any) -> dict[str, dict[str, tuple[int, int]]]:
    """``{record short name: {field: (precision, scale)}}`` of every decimal field in ``node``."""
    found: dict[str, dict[str, tuple[int, int]]] = {}
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            if item.get("type") == "record" and isinstance(item.get("fields"), list):
                name = str(item.get("name", "")).rpartition(".")[2]
                for field in item["fields"]:
                    ftype = field.get("type")
                    branches = ftype if isinstance(ftype, list) else [ftype]
                    for branch in branches:
                        if isinstance(branch, dict) and branch.get(_DECIMAL_MARK):
                            precision, scale = int(branch["precision"]), int(branch.get("scale", 0))
                            found.setdefault(name, {})[field["name"]] = (precision, scale)
            stack.extend(v for v in item.values() if isinstance(v, dict | list))
    return found


def _decimal(raw: Any, precision: int, scale: int, field: str) -> decimal.Decimal:
    """Avro's big-endian two's-complement unscaled bytes as fastavro converts them in range,
    refused by length first (linear), then by the field's precision."""
    out_of_range = DecodeError(
        f"Payload.{field}: outside decimal({precision},{scale})", reason="decimal_out_of_range"
    )
    if not isinstance(raw, bytes):  # pragma: no cover - the stripped schema reads bytes
        raise out_of_range
    if len(raw) > precision // 2 + 2:  # 10**precision needs fewer bytes than this
        raise out_of_range
    unscaled = int.from_bytes(raw, "big", signed=True)
    if abs(unscaled) >= 10**precision:
        raise out_of_range
    context = decimal.Context(prec=precision)
    return context.create_decimal(unscaled).scaleb(-scale, context)
