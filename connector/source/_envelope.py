"""Debezium's change-event envelope -> ``ChangeEvent``, whatever the wire format.

The JSON and the Avro decoder each turn bytes into the envelope's dicts (``before``,
``after``, ``source``, ``op``, ``transaction``) and hand them here, so the rules live once:

- ``op`` picks the row: ``after`` for c/u/r, ``before`` for d (often only the primary key;
  with ``REPLICA IDENTITY NOTHING`` it is null, and the message key stands in for it);
- ``source.connector`` picks the table name and the version (``version.py`` says why);
- PostgreSQL's unchanged-TOAST placeholder is taken out of the row and the column named in
  ``unavailable`` (an update's new tuple carries it, so it reaches both ``u`` events and the
  ``c`` event a primary-key update becomes);
- key and row must agree on every key column the row carries;
- ``__debezium.oldkey`` / ``__debezium.newkey`` headers become ``old_key`` / ``new_key``.

Typing is the decoders' job except where key and value disagree on having a schema: then
the side with a plan converts the other side's key columns too, so ``1 == 1`` rather than
``Decimal("1") != "AQ=="`` decides ``key_mismatch``.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from connector.errors import ConfigError, DecodeError
from connector.source._logical import Plan, apply_plan, convert_value
from connector.source.events import ChangeEvent, Op, Position, Transaction
from connector.source.version import Version, mysql_version, postgres_version

__all__ = ["DEFAULT_PLACEHOLDER", "Envelope", "Headers", "KeyParser", "Placeholder"]

Headers = Sequence[tuple[str, bytes | None]]
DEFAULT_PLACEHOLDER = "__debezium_unavailable_value"
_OPS = {"c": Op.CREATE, "u": Op.UPDATE, "d": Op.DELETE, "r": Op.READ}
_OLD_KEY = "__debezium.oldkey"
_NEW_KEY = "__debezium.newkey"


class Placeholder:
    """Every shape of Debezium's unchanged-TOAST placeholder, precomputed from the setting.

    Like Debezium's ``unavailable.value.placeholder``, a ``hex:`` prefix gives raw bytes. The
    shapes: the string (text columns), its bytes (``bytea`` in Avro) or their base64 (``bytea``
    in JSON), a one-element array of the string (text arrays), the bytes as a list of ints
    (int/bigint arrays) and ``{s: s}`` (hstore as a map). ``json_markers`` are the byte
    strings one of which a JSON message must contain to hold a placeholder at all, so most
    messages are never scanned.
    """

    def __init__(self, setting: str = DEFAULT_PLACEHOLDER) -> None:
        if setting.startswith("hex:"):
            try:
                self.raw = bytes.fromhex(setting[4:])
            except ValueError:
                raise ConfigError("unavailable_placeholder: the part after hex: is not hexadecimal") from None
            self.text = self.raw.decode("utf-8", "replace")
        else:
            self.text, self.raw = setting, setting.encode("utf-8")
        if not self.raw:
            raise ConfigError("unavailable_placeholder must not be empty (it would match every empty value)")
        self.b64 = base64.b64encode(self.raw).decode("ascii")
        self.ints = [b - 256 if b > 127 else b for b in self.raw]  # Java's signed bytes
        self.json_markers = (
            orjson.dumps(self.text)[1:-1],  # as it appears inside a JSON string
            self.b64.encode("ascii"),
            ",".join(map(str, self.ints)).encode("ascii"),
        )

    def matches(self, value: Any) -> bool:
        if isinstance(value, str):
            return value == self.text or value == self.b64
        if isinstance(value, bytes):
            return value == self.raw
        if isinstance(value, list):
            return value == [self.text] or value == self.ints
        if isinstance(value, dict):
            return value == {self.text: self.text}
        return False

    def strip(self, row: dict[str, Any]) -> frozenset[str]:
        """Remove placeholder columns from ``row`` in place; return their names."""
        gone = [column for column, value in row.items() if self.matches(value)]
        for column in gone:
            del row[column]
        return frozenset(gone)


def _table(connector: Any, source: Mapping[str, Any]) -> tuple[str, Callable[..., Version]]:
    if connector == "postgresql":
        first, second, version = source.get("schema"), source.get("table"), postgres_version
        names = "source.schema/source.table"
    elif connector == "mysql":
        first, second, version = source.get("db"), source.get("table"), mysql_version
        names = "source.db/source.table"
    else:
        raise DecodeError("source.connector is not postgresql or mysql", reason="unsupported_connector")
    if not isinstance(first, str) or not isinstance(second, str) or not first or not second:
        raise DecodeError(f"{names} missing or not strings", reason="bad_source")
    return f"{first}.{second}", version


def _snapshot_end(connector: Any, snapshot: Any, source: Mapping[str, Any]) -> str | None:
    """The source's logical name (``source.name``, the topic prefix) when this read is the last
    of a PostgreSQL initial snapshot (``source.snapshot == "last"``), else None: the ingest
    records the completed generation for the sweep (docs/decisions/0019)."""
    if snapshot != "last" or connector != "postgresql":
        return None
    name = source.get("name")
    return name if isinstance(name, str) and name else None  # no name: no sweep, the row still applies


def _transaction(block: Any) -> Transaction | None:
    if block is None:
        return None
    if type(block) is not dict and not isinstance(block, Mapping):  # dict first: ABC checks are slow
        raise DecodeError("transaction is not an object", reason="bad_transaction")
    tx_id, total, per_table = block.get("id"), block.get("total_order"), block.get("data_collection_order")
    if not isinstance(tx_id, str) or type(total) is not int or type(per_table) is not int:
        raise DecodeError(
            "transaction.id/total_order/data_collection_order missing or mistyped", reason="bad_transaction"
        )
    return Transaction(tx_id, total, per_table)


def _cross_convert(target: dict[str, Any], columns: Mapping[str, Any], plan: Plan, where: str) -> None:
    """Type ``target``'s key columns with the other side's plan (one side had no schema)."""
    for column in columns:
        conv = plan.get(column)
        value = target.get(column)
        if conv is not None and value is not None:
            target[column] = convert_value(conv, value, column, where)


def _type_key(key: dict[str, Any], key_plan: Plan | None, row_plan: Plan | None, where: str) -> None:
    if key_plan is not None:
        apply_plan(key, key_plan, where)
    elif row_plan is not None:
        _cross_convert(key, key, row_plan, where)


KeyParser = Callable[[bytes, str], tuple[dict[str, Any], "Plan | None"]]
"""``(raw, header name) -> (key columns, plan from the key's own schema or None)``."""


class Envelope:
    """Builds a ``ChangeEvent`` from an envelope's parts; one per decoder, holds the options."""

    def __init__(self, header_key: KeyParser, *, unavailable_placeholder: str = DEFAULT_PLACEHOLDER) -> None:
        self.placeholder = Placeholder(unavailable_placeholder)
        self._header_key = header_key

    def event(
        self,
        payload: Mapping[str, Any],
        key: dict[str, Any],
        headers: Headers | None,
        position: Position,
        *,
        row_plans: tuple[Plan, Plan] | None,
        key_plan: Plan | None,
        scan_toast: bool = True,
    ) -> ChangeEvent:
        """The event for one envelope; ``row_plans`` is (before, after), None without a schema.

        ``key`` is typed here, in place, by ``key_plan`` (None: the key had no schema).
        ``scan_toast`` False promises that the message cannot hold the placeholder (the JSON
        pre-check found none of its shapes in the bytes).
        """
        raw_op = payload.get("op")
        op = _OPS.get(raw_op) if isinstance(raw_op, str) else None
        if op is None:
            raise DecodeError("op is not one of c, u, d, r", reason="unknown_op")
        source = payload.get("source")
        if type(source) is not dict and not isinstance(source, Mapping):
            raise DecodeError("source block missing or not an object", reason="missing_source")
        connector = source.get("connector")
        table, version_of = _table(connector, source)
        snapshot = source.get("snapshot") if op is Op.READ else None
        # An incremental snapshot's read is ordered among the streamed changes (version.py).
        initial = op is Op.READ and snapshot != "incremental"
        version = version_of(source, snapshot=initial, offset=position.offset)

        field = "before" if op is Op.DELETE else "after"
        row_plan = None if row_plans is None else row_plans[0 if op is Op.DELETE else 1]
        _type_key(key, key_plan, row_plan, "key")
        row = payload.get(field)
        if row is None and op is Op.DELETE:
            row = dict(key)  # REPLICA IDENTITY NOTHING: the key is all a delete tells
        elif row is None:
            raise DecodeError(f"{field} is null or missing for this op", reason="missing_row")
        elif not isinstance(row, dict):
            raise DecodeError(f"{field} is not an object", reason="wrong_type")

        unavailable: frozenset[str] = frozenset()
        if scan_toast and connector == "postgresql":
            unavailable = self.placeholder.strip(row)
        if row_plan is not None:
            apply_plan(row, row_plan, field)
        elif key_plan is not None:
            _cross_convert(row, key, key_plan, field)
        for column, key_value in key.items():
            if column in row and row[column] != key_value:
                raise DecodeError(f"key.{column} differs from {field}.{column}", reason="key_mismatch")

        old_key = new_key = None
        if headers:
            for name, raw in headers:
                if raw is not None and name in (_OLD_KEY, _NEW_KEY):
                    parsed, plan = self._header_key(raw, name)
                    _type_key(parsed, plan, row_plan, name)
                    if name == _OLD_KEY:
                        old_key = parsed
                    else:
                        new_key = parsed
        ts_ms = source.get("ts_ms")
        return ChangeEvent(
            position=position,
            table=table,
            op=op,
            key=key,
            row=row,
            version=version,
            unavailable=unavailable,
            old_key=old_key,
            new_key=new_key,
            source_ts_ms=ts_ms if type(ts_ms) is int else None,
            transaction=_transaction(payload.get("transaction")),
            snapshot_end=_snapshot_end(connector, snapshot, source),
        )
