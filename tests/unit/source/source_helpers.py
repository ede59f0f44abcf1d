"""Helpers for the source-stage tests: fixture messages as the bytes Kafka carries, the canary check.

A plain module, not a conftest: tests import it as ``tests.unit.source.source_helpers``."""

from __future__ import annotations

import io
import traceback
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import orjson

from connector.source import Position

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "debezium"
CANARY = "Zyx-CANARY-4417"
"""A value seeded into bad input; no error message, reason or traceback may contain it."""


@dataclass
class Message:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]] | None
    position: Position


def fixture_doc(name: str) -> dict[str, Any]:
    """A fixture file as a dict (to edit before encoding)."""
    doc: dict[str, Any] = orjson.loads((FIXTURES / name).read_bytes())
    return doc


def to_message(doc: dict[str, Any], *, pretty: bool = False) -> Message:
    """Key/value/headers as Kafka carries them: compact JSON, as JsonConverter writes it."""
    option = orjson.OPT_INDENT_2 if pretty else 0

    def enc(obj: Any) -> bytes | None:
        return None if obj is None else orjson.dumps(obj, option=option)

    headers = [(name, enc(v)) for name, v in doc.get("headers", {}).items()] or None
    return Message(
        enc(doc["key"]), enc(doc["value"]), headers, Position(doc["topic"], doc["partition"], doc["offset"])
    )


def assert_no_canary(exc: BaseException) -> None:
    """The error's message, reason and whole printed traceback are free of the canary."""
    printed = "".join(traceback.format_exception(exc))
    assert CANARY not in printed
    assert CANARY not in str(getattr(exc, "reason", ""))


def message(name: str, *, pretty: bool = False) -> Message:
    """A fixture file as a Kafka message."""
    return to_message(fixture_doc(name), pretty=pretty)


def avro_schema(name: str) -> dict[str, Any]:
    """An ``.avsc`` fixture as a dict."""
    schema: dict[str, Any] = orjson.loads((FIXTURES / name).read_bytes())
    return schema


def confluent_frame(schema_id: int, schema: dict[str, Any], record: Any) -> bytes:
    """Confluent wire format: magic byte 0, the 4-byte schema id, the Avro binary."""
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema), record)
    return b"\x00" + schema_id.to_bytes(4, "big") + body.getvalue()


def families_row(id_: int = 1003, **over: Any) -> dict[str, Any]:
    """``claims.public.families`` row as AvroConverter hands it to Avro (raw Connect values)."""
    row: dict[str, Any] = {
        "id": id_,
        "family_name": "Nguyen",
        "status": "PENDING",
        "coverage_start": 19723,
        "deductible": Decimal("3000.00"),
        "balance": {"scale": 3, "value": (-1250125).to_bytes(3, "big", signed=True)},
        "enrolled_at": 1702632600123456,
        "updated_at": "2024-11-04T17:30:05.123456Z",
        "notes": "Prefers paper statements.",
        "photo": b"\x89PNG\r\n\x1a\n",
        "tags": ["hsa", "paperless"],
    }
    row.update(over)
    return row


def families_envelope(op: str = "c", before: Any = None, after: Any = None, **source: Any) -> dict[str, Any]:
    """A Debezium PostgreSQL envelope record for ``pg_families_value.avsc``."""
    src = {
        "version": "3.1.3.Final",
        "connector": "postgresql",
        "name": "carecloud",
        "ts_ms": 1730741405000,
        "snapshot": "false",
        "db": "claims",
        "sequence": '["34389280","34389512"]',
        "ts_us": 1730741405000000,
        "ts_ns": 1730741405000000000,
        "schema": "public",
        "table": "families",
        "txId": 779,
        "lsn": 34389512,
        "xmin": None,
    }
    src.update(source)
    return {
        "before": before,
        "after": after,
        "source": src,
        "transaction": {"id": "779:34389512", "total_order": 1, "data_collection_order": 1},
        "op": op,
        "ts_ms": 1730741405873,
        "ts_us": 1730741405873417,
        "ts_ns": 1730741405873417206,
    }
