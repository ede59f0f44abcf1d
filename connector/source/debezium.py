"""Debezium JSON (Kafka Connect ``JsonConverter``) -> ``ChangeEvent``.

Handles both converter settings: ``schemas.enable=true`` wraps key and value as
``{"schema": ..., "payload": ...}`` and lets the decoder type decimals, dates and timestamps;
``false`` sends the bare payload, whose values stay as the wire gave them. The envelope rules
themselves (op, source, TOAST, key agreement, key headers) are in ``_envelope``.

This is the per-event hot path, so:

- the schema block, identical in every message of a table, is not parsed per message: a
  wrapped message is split at its first ``,"payload":`` and the schema bytes looked up in a
  cache of converter plans; only the payload is handed to ``orjson.loads``. The split is
  safe: a ``"`` inside a JSON string is always escaped, so ``,"payload":`` occurs only
  structurally, and a schema slice that is not a complete JSON value (a schema with a
  ``payload`` key of its own) fails to parse and falls back to one full parse;
- the TOAST placeholder is searched for in the raw bytes first (a C substring search), and
  the row is scanned only when one of its shapes is there;
- nothing is copied: the row is the dict ``orjson`` built, converted in place.

Integers stay exact up to 64 bits (``orjson``); JSON numbers beyond 64 bits arrive as floats,
which only ``decimal.handling.mode=double`` or ``decimal.format=NUMERIC`` can produce.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import orjson

from connector.errors import DecodeError
from connector.source._envelope import DEFAULT_PLACEHOLDER, Envelope, Headers
from connector.source._logical import Plan, connect_plan
from connector.source.events import ChangeEvent, Position
from connector.source.limits import check_nesting

__all__ = ["DebeziumJsonDecoder", "JsonKeyParser"]

_WRAPPED_PREFIX: Final = b'{"schema":'
_PAYLOAD_SEP: Final = b',"payload":'
_MISSING: Final = object()
_CACHE_SIZE: Final = 256
_TOO_DEEP: Final = "depth limit"
"""How orjson names a document nested past its own limit (1024), before ours could look."""
_RowPlans = tuple[Plan, Plan] | None


def _json_problem(raw: bytes, exc: orjson.JSONDecodeError) -> DecodeError:
    """Name the rule a document broke, from the error's category only (never its text)."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return DecodeError("value is not valid UTF-8", reason="invalid_utf8")
    text = str(exc)
    if _TOO_DEEP in text:
        return DecodeError("value is nested too deeply to parse", reason="nesting_too_deep")
    if "zero-length" in text:
        rule = "empty document"
    elif "control character" in text:
        rule = "raw control character in a string"
    elif "infinity" in text or "NaN" in text:
        rule = "non-finite number"
    elif "end of data" in text or "EOF" in text:
        rule = "truncated document"
    else:
        rule = "malformed document (NaN/Infinity literals, bad syntax)"
    return DecodeError(f"value is not valid JSON: {rule}", reason="invalid_json")


def _is_wrapped(doc: Any) -> bool:
    return isinstance(doc, dict) and len(doc) == 2 and "schema" in doc and "payload" in doc


def _brackets(raw: bytes, start: int = 0) -> int:
    """Opening brackets in ``raw[start:]``: an upper bound of the nesting, counted in C."""
    return raw.count(b"{", start) + raw.count(b"[", start)


def _loaded(raw: bytes, where: str) -> Any:
    """``raw`` parsed whole, with its nesting checked (``check_nesting``)."""
    doc = orjson.loads(raw)
    check_nesting(doc, _brackets(raw), where)
    return doc


class _Wrapped:
    """Loads ``{"schema", "payload"}`` documents, caching what ``build`` makes of each schema."""

    def __init__(self, build: Callable[[Any], Any]) -> None:
        self._build = build
        self._cache: dict[bytes, Any] = {}

    def _remember(self, schema_bytes: bytes, schema: Any) -> Any:
        if len(self._cache) >= _CACHE_SIZE:  # schema churn is rare; forget the oldest
            del self._cache[next(iter(self._cache))]
        built = self._cache[schema_bytes] = self._build(schema)
        return built

    def fast(self, raw: bytes, where: str) -> tuple[Any, Any] | None:
        """(payload, built schema) by the split, or None when the caller must parse it whole.

        Both halves have their nesting checked; the schema's once, when it is first seen.
        """
        if not raw.startswith(_WRAPPED_PREFIX) or raw[-1:] != b"}":
            return None
        cut = raw.find(_PAYLOAD_SEP, 10)
        if cut < 0:
            return None
        schema_bytes = raw[10:cut]
        built = self._cache.get(schema_bytes, _MISSING)
        if built is _MISSING:
            try:
                schema = orjson.loads(schema_bytes)
            except orjson.JSONDecodeError:
                return None
            check_nesting(schema, _brackets(schema_bytes), f"{where} schema")
            built = self._remember(schema_bytes, schema)
        try:
            payload = orjson.loads(memoryview(raw)[cut + 11 : -1])
        except orjson.JSONDecodeError:
            return None
        check_nesting(payload, _brackets(raw, cut), where)
        return payload, built

    def slow(self, doc: dict[str, Any]) -> tuple[Any, Any]:
        """(payload, built schema) of a wrapped document parsed by ``_loaded`` (so the schema
        is shallow enough for ``orjson.dumps``, which raises ``TypeError`` past 254 levels)."""
        schema_bytes = orjson.dumps(doc["schema"])
        built = self._cache.get(schema_bytes, _MISSING)
        if built is _MISSING:
            built = self._remember(schema_bytes, doc["schema"])
        return doc["payload"], built


def _value_plans(schema: Any) -> _RowPlans:
    """(before, after) plans of an ``Envelope`` struct schema; None if it has no fields."""
    if not isinstance(schema, dict) or not isinstance(schema.get("fields"), list):
        return None
    by_name = {
        f["field"]: f for f in schema["fields"] if isinstance(f, dict) and isinstance(f.get("field"), str)
    }
    return connect_plan(by_name.get("before")) or {}, connect_plan(by_name.get("after")) or {}


class JsonKeyParser:
    """Parses JSON keys (message keys and the ``__debezium.*key`` headers), wrapped or not."""

    def __init__(self) -> None:
        self._wrapped = _Wrapped(connect_plan)

    def __call__(self, raw: bytes, where: str = "key") -> tuple[dict[str, Any], Plan | None]:
        """(key columns, plan from the key's schema or None); ``where`` names it in errors."""
        reason = "invalid_key" if where == "key" else "invalid_header"
        loaded = self._wrapped.fast(raw, where)
        if loaded is None:
            try:
                doc = _loaded(raw, where)
            except orjson.JSONDecodeError as exc:
                if _TOO_DEEP in str(exc):
                    raise DecodeError(
                        f"{where} is nested too deeply to parse", reason="nesting_too_deep"
                    ) from None
                raise DecodeError(f"{where} is not valid JSON", reason=reason) from None
            loaded = self._wrapped.slow(doc) if _is_wrapped(doc) else (doc, None)
        columns, plan = loaded
        if columns is None and where == "key":
            raise DecodeError("message key payload is null", reason="missing_key")
        if not isinstance(columns, dict):
            raise DecodeError(f"{where} is not a JSON object of key columns", reason=reason)
        return columns, plan


class DebeziumJsonDecoder:
    """Decodes Debezium JSON messages; one instance per consumer (it caches per schema).

    ``unavailable_placeholder`` is the connector's ``unavailable.value.placeholder``.
    """

    def __init__(self, *, unavailable_placeholder: str = DEFAULT_PLACEHOLDER) -> None:
        self._keys = JsonKeyParser()
        self._values = _Wrapped(_value_plans)
        self._envelope = Envelope(self._keys, unavailable_placeholder=unavailable_placeholder)
        self._markers = self._envelope.placeholder.json_markers

    def decode(
        self, key: bytes | None, value: bytes | None, headers: Headers | None, position: Position
    ) -> ChangeEvent | None:
        """The change in one message; None for a tombstone; ``DecodeError`` for bad input."""
        if value is None:
            return None  # the tombstone after a delete: compaction's marker, not a second delete
        loaded = self._values.fast(value, "value")
        if loaded is None:
            try:
                doc = _loaded(value, "value")
            except orjson.JSONDecodeError as exc:
                raise _json_problem(value, exc) from None
            loaded = self._values.slow(doc) if _is_wrapped(doc) else (doc, None)
        payload, row_plans = loaded
        if payload is None:
            return None  # a JSON null (or a wrapped null payload) carries no change either
        if not isinstance(payload, dict):
            raise DecodeError("value is not a JSON object", reason="invalid_envelope")
        if key is None:
            raise DecodeError("message key is null", reason="missing_key")
        columns, key_plan = self._keys(key)
        m = self._markers
        scan = m[0] in value or m[1] in value or m[2] in value
        return self._envelope.event(
            payload, columns, headers, position, row_plans=row_plans, key_plan=key_plan, scan_toast=scan
        )
