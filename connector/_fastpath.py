"""The one door to the compiled fast path: the ``carecloud_fastpath`` extension (fastpath/).

Only this module imports the extension; the ingest (``mapping.fastpath``, ``ingest``) and the
snapshot (``snapshot.compiled_cut``, ``snapshot.digest_format``, ``snapshot.run``) get it from here.

**The version handshake.** The extension exports ``CONTRACT_VERSION`` (fastpath/src/contract.rs),
the version of the interface it implements: the plan's fields (``validate_plan`` below), what
``Core.map`` and ``peek`` return, the state row's layout, and the snapshot's ``CutSpill``,
``Rows``, ``CsvRows`` and ``digest_diff``. ``CONTRACT_VERSION`` here is the version this package
was written against; the two are raised together whenever one of those changes (a unit test
holds the sources to the same number). An installed extension with another number, or with none
(built before the handshake), was built from older sources: ``fastpath_available`` names it as
*stale*, with the rebuild command (``make venv``), so a setting of ``on`` refuses to start with
that message and ``auto`` logs it as a warning and runs the Python path, exactly as when the
extension is not installed at all (docs/decisions/0012, 0013).

**The plan.** ``core`` validates the plan handed to Rust (``validate_plan``): a field this
contract does not know is refused here, by name, rather than ignored by the extension.

This module imports nothing of the connector (the lowest layer of ``.importlinter``), so every
stage can use it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, cast

import orjson

__all__ = [
    "CONTRACT_VERSION",
    "EXTENSION",
    "REBUILD",
    "Core",
    "Extension",
    "PlanError",
    "StaleExtensionError",
    "core",
    "fastpath_available",
    "load",
    "load_or_none",
    "validate_plan",
]

EXTENSION = "carecloud_fastpath"
CONTRACT_VERSION = 7
"""The contract this package expects; fastpath/src/contract.rs holds the extension's.
Contract 3: ``Core.map`` takes the source partition's snapshot generation (docs/decisions/0019);
4: ``CutSpill.sweep`` and ``CutSpill.swept`` (the re-snapshot's sweep); 6: the plan's
``source_columns`` (the row's ``"src"``, docs/decisions/0025)."""
REBUILD = "make venv"
"""The command that rebuilds the extension from this checkout's sources (the Makefile)."""

Mapped = tuple[
    str, str, bool, tuple[int, int, int, int, int], bytes, bytes | None, tuple[str, str, int] | None
]
"""``Core.map``'s answer: (entity, EntityId, deleted, version, state key, encoded row or None,
(table, transaction.id, data_collection_order) of Debezium's transaction block or None).
Contract 2 added the last element, and ``CutSpill.reserved`` (the transaction ledger)."""


class Core(Protocol):
    """One topic's compiled mapping (``Core(plan_json, markers)``)."""

    def map(self, key: bytes, value: bytes, offset: int, generation: int) -> Mapped | None: ...


class Extension(Protocol):
    """What the connector uses of the extension, at ``CONTRACT_VERSION``."""

    CONTRACT_VERSION: int
    Core: Callable[[str, list[bytes]], Core]
    peek: Callable[[bytes], tuple[int, int, int, int, int] | None]
    CutSpill: Callable[[str, int], Any]

    def digest_diff(self, previous: str, current: str) -> tuple[int, int, int, int]: ...


class StaleExtensionError(ImportError):
    """The installed extension implements another contract than this package expects."""


class PlanError(ValueError):
    """A plan the contract does not describe (an unknown or missing field, a wrong shape)."""


def load() -> Extension:
    """The extension, its contract checked; ImportError (or ``StaleExtensionError``) if unusable."""
    module = importlib.import_module(EXTENSION)
    found = getattr(module, "CONTRACT_VERSION", None)
    if found != CONTRACT_VERSION:
        built = "no contract version (built before it had one)" if found is None else f"contract {found!r}"
        raise StaleExtensionError(
            f"the {EXTENSION} extension is stale: it implements {built}, this connector expects "
            f"contract {CONTRACT_VERSION}; it was built from older sources: rebuild it with `{REBUILD}`"
        )
    return cast(Extension, module)


def fastpath_available() -> str | None:
    """None when the extension loads and speaks this contract, else why not (for the start-up
    log and error: ``on`` refuses to start with it, ``auto`` warns and runs the Python path)."""
    try:
        load()
    except StaleExtensionError as exc:
        return str(exc)
    except ImportError as exc:
        return f"the {EXTENSION} extension is not installed ({exc})"
    return None


def load_or_none() -> Extension | None:
    """The extension, or None when it is missing or stale (the caller runs the Python path)."""
    try:
        return load()
    except ImportError:
        return None


def core(plan: Mapping[str, Any], markers: Sequence[bytes]) -> Core:
    """The extension's ``Core`` for one topic's plan, validated first (``validate_plan``)."""
    validate_plan(plan)
    return load().Core(orjson.dumps(plan).decode(), [bytes(m) for m in markers])


# -- the plan ---------------------------------------------------------------------------
# The fields of each part of the plan, as fastpath/src/plan.rs reads them: (required, optional).
_PLAN = ({"tables"}, set[str]())
_TABLE = ({"entity", "entity_id", "fields"}, {"mapping_version", "source_columns"})
_FIELD = ({"name", "source"}, {"on_null"})
_SOURCES = {
    "const": {"json"},
    "column": {"column", "path", "conv", "enum_map"},
    "template": {"segments", "columns"},
}
_CONVS = {
    "string": set[str](),
    "boolean": set[str](),
    "integer": {"lo", "hi"},
    "enum": {"symbols"},
    "decimal": {"scale", "precision"},
    "date": set[str](),
    "timestamp": {"divisor", "millis"},
}
_SEGMENTS = {"lit", "col"}


def validate_plan(plan: Mapping[str, Any]) -> None:
    """Refuse (``PlanError``, naming where) a plan with a field the contract does not know, a
    required field missing, or a part of the wrong shape; the values' own types are the
    extension's to check."""
    _fields(plan, "plan", *_PLAN)
    tables = plan["tables"]
    if not isinstance(tables, Mapping):
        raise PlanError("plan.tables: not an object")
    for name, table in tables.items():
        where = f"plan.tables[{name!r}]"
        _fields(table, where, *_TABLE)
        for i, segment in enumerate(_list(table["entity_id"], f"{where}.entity_id")):
            _segment(segment, f"{where}.entity_id[{i}]")
        for i, field in enumerate(_list(table["fields"], f"{where}.fields")):
            _field(field, f"{where}.fields[{i}]")


def _field(field: Any, where: str) -> None:
    _fields(field, where, *_FIELD)
    source = field["source"]
    kind = _kind(source, f"{where}.source", _SOURCES)
    _fields(source, f"{where}.source", {"kind"} | _SOURCES[kind], set())
    if kind == "column":
        conv = source["conv"]
        conv_kind = _kind(conv, f"{where}.source.conv", _CONVS)
        _fields(conv, f"{where}.source.conv", {"kind"} | _CONVS[conv_kind], set())
    elif kind == "template":
        for i, segment in enumerate(_list(source["segments"], f"{where}.source.segments")):
            _segment(segment, f"{where}.source.segments[{i}]")


def _segment(segment: Any, where: str) -> None:
    if not isinstance(segment, Mapping) or len(segment) != 1 or not set(segment) <= _SEGMENTS:
        raise PlanError(f"{where}: a segment is one of {sorted(_SEGMENTS)}, got {segment!r}")


def _kind(part: Any, where: str, kinds: Mapping[str, set[str]]) -> str:
    kind = part.get("kind") if isinstance(part, Mapping) else None
    if kind not in kinds:
        raise PlanError(f"{where}: unknown kind {kind!r} (known: {', '.join(sorted(kinds))})")
    return cast(str, kind)


def _fields(part: Any, where: str, required: set[str], optional: set[str]) -> None:
    if not isinstance(part, Mapping):
        raise PlanError(f"{where}: not an object")
    unknown = set(part) - required - optional
    if unknown:
        raise PlanError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    missing = required - set(part)
    if missing:
        raise PlanError(f"{where}: missing field(s) {', '.join(sorted(missing))}")


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise PlanError(f"{where}: not a list")
    return value
