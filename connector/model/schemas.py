"""The seven Avro schemas: six CareCloud entities and the change envelope that carries them.

The ``.avsc`` files are the single source of truth; everything here is derived from them once,
at import, and kept for the life of the process:

- ``schema(name)`` the fastavro-parsed schema (what the codec and sinks hand to fastavro);
- ``raw_schema(name)`` the JSON as written;
- ``fingerprint(name)`` sha256 of the Avro Parsing Canonical Form (snapshot manifests);
- ``field_names(name)`` the fields in schema order (CSV column order);
- ``REFERENCES`` each entity's association fields, read from the ``"references"`` attribute
  that an association field carries in its ``.avsc``.

Where the files are read from, first match wins: the directory in ``CARECLOUD_SCHEMA_DIR``;
``connector/model/avro/`` inside an installed wheel (pyproject force-includes them there);
``schemas/avro/`` of a source checkout. A missing, unreadable or inconsistent file is a
``ConfigError`` raised at import, so a broken install fails at start-up, not mid-stream.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastavro.schema import SchemaParseException, UnknownType, parse_schema, to_parsing_canonical_form

from connector.errors import ConfigError
from connector.model.exceptions import UnknownSchemaError

__all__ = [
    "ENTITY_NAMES",
    "ENTITY_NAMESPACE",
    "ENVELOPE_NAME",
    "ENVELOPE_NAMESPACE",
    "REFERENCES",
    "SCHEMA_DIR_ENV",
    "SCHEMA_NAMES",
    "Reference",
    "field_names",
    "fingerprint",
    "raw_schema",
    "schema",
]

ENTITY_NAMES: tuple[str, ...] = ("Family", "Provider", "FamilyMember", "Care", "Claim", "EOP")
"""The six entities, every parent before its children (load and delivery order)."""
ENVELOPE_NAME = "ChangeEnvelope"
SCHEMA_NAMES: tuple[str, ...] = (*ENTITY_NAMES, ENVELOPE_NAME)
ENTITY_NAMESPACE = "com.carecloud.entities"
ENVELOPE_NAMESPACE = "com.carecloud.cdc"
SCHEMA_DIR_ENV = "CARECLOUD_SCHEMA_DIR"
"""Environment variable naming a directory of ``.avsc`` files that overrides the packaged ones."""

_PRIMARY_KEY = "EntityId"
_REFERENCES_ATTRIBUTE = "references"
_PACKAGE_DIR = Path(__file__).resolve().parent / "avro"
_CHECKOUT_DIR = Path(__file__).resolve().parents[2] / "schemas" / "avro"


@dataclass(frozen=True, slots=True)
class Reference:
    """An association: the child's ``field`` holds the ``EntityId`` of a ``parent`` entity."""

    field: str
    parent: str


@dataclass(frozen=True, slots=True)
class _Registry:
    directory: Path
    raw: dict[str, dict[str, Any]]
    parsed: dict[str, dict[str, Any]]
    fields: dict[str, tuple[str, ...]]
    fingerprints: dict[str, str]
    references: dict[str, tuple[Reference, ...]]


def schema(name: str) -> dict[str, Any]:
    """The fastavro-parsed schema of ``name``, parsed once; share it, do not mutate it."""
    return _REGISTRY.parsed[_known(name)]


def raw_schema(name: str) -> dict[str, Any]:
    """A copy of the schema of ``name`` as written in its ``.avsc`` file."""
    return copy.deepcopy(_REGISTRY.raw[_known(name)])


def fingerprint(name: str) -> str:
    """Lower-case sha256 hex of the schema's Avro Parsing Canonical Form.

    For the envelope the entity records are inlined first, so the fingerprint covers them.
    The canonical form keeps names and types and drops docs, defaults, logical types and custom
    attributes, so a doc edit does not change the fingerprint (decision 0003 has the caveats).
    """
    return _REGISTRY.fingerprints[_known(name)]


def field_names(name: str) -> tuple[str, ...]:
    """The field names of ``name`` in schema order (the CSV column order)."""
    return _REGISTRY.fields[_known(name)]


def _known(name: str) -> str:
    if name not in _REGISTRY.parsed:
        raise UnknownSchemaError(f"unknown schema {name!r}: expected one of {', '.join(SCHEMA_NAMES)}")
    return name


def _schema_dir() -> Path:
    """The directory to read the ``.avsc`` files from (see the module docstring)."""
    override = os.environ.get(SCHEMA_DIR_ENV)
    if override:
        path = Path(override)
        if not path.is_dir():
            raise ConfigError(f"{SCHEMA_DIR_ENV} does not name a directory: {override}")
        return path
    for candidate in (_PACKAGE_DIR, _CHECKOUT_DIR):
        if candidate.is_dir():
            return candidate
    raise ConfigError(f"no schema directory: neither {_PACKAGE_DIR} nor {_CHECKOUT_DIR} exists")


def _load(directory: Path) -> _Registry:
    """Read, check and parse the seven schemas in ``directory``."""
    raw = {name: _read(directory / f"{name}.avsc", name) for name in SCHEMA_NAMES}
    named: dict[str, dict[str, Any]] = {}  # shared, so the envelope resolves the entity names
    parsed = {name: _parse(raw[name], named, directory / f"{name}.avsc") for name in SCHEMA_NAMES}
    references = {name: _references(raw[name], name) for name in ENTITY_NAMES}
    _check_envelope(raw[ENVELOPE_NAME])
    fingerprints = {name: _sha256(to_parsing_canonical_form(parsed[name])) for name in ENTITY_NAMES}
    standalone = _inline(raw[ENVELOPE_NAME], {f"{ENTITY_NAMESPACE}.{n}": raw[n] for n in ENTITY_NAMES})
    fingerprints[ENVELOPE_NAME] = _sha256(to_parsing_canonical_form(standalone))
    fields = {name: tuple(field["name"] for field in raw[name]["fields"]) for name in SCHEMA_NAMES}
    return _Registry(directory, raw, parsed, fields, fingerprints, references)


def _read(path: Path, name: str) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"schema file {path} cannot be read: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"schema file {path} is not JSON (line {exc.lineno}: {exc.msg})") from None
    namespace = ENVELOPE_NAMESPACE if name == ENVELOPE_NAME else ENTITY_NAMESPACE
    if not (
        isinstance(document, dict)
        and document.get("type") == "record"
        and document.get("name") == name
        and document.get("namespace") == namespace
        and isinstance(document.get("fields"), list)
        and all(isinstance(field, dict) and "name" in field for field in document["fields"])
    ):
        raise ConfigError(f"schema file {path} must hold the record {namespace}.{name}")
    first = document["fields"][0] if document["fields"] else {}
    if name != ENVELOPE_NAME and (first.get("name"), first.get("type")) != (_PRIMARY_KEY, "string"):
        raise ConfigError(f"schema {name}: the first field must be the string primary key {_PRIMARY_KEY}")
    return document


def _parse(raw: dict[str, Any], named: dict[str, dict[str, Any]], path: Path) -> dict[str, Any]:
    try:
        parsed = parse_schema(raw, named)
    except (SchemaParseException, UnknownType, ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"schema file {path} is not a valid Avro schema: {exc}") from None
    assert isinstance(parsed, dict)  # a record schema parses to a dict
    return parsed


def _references(raw: dict[str, Any], name: str) -> tuple[Reference, ...]:
    found = []
    for field in raw["fields"]:
        parent = field.get(_REFERENCES_ATTRIBUTE)
        if parent is None:
            continue
        if parent not in ENTITY_NAMES or field["type"] != "string":
            raise ConfigError(
                f"schema {name}: field {field['name']} must be a string referencing one of "
                f"{', '.join(ENTITY_NAMES)}"
            )
        found.append(Reference(field["name"], parent))
    return tuple(found)


def _check_envelope(raw: dict[str, Any]) -> None:
    """The envelope's EntityType symbols and Payload branches must be exactly the six entities."""
    types = {field["name"]: field["type"] for field in raw["fields"]}
    entity_type = types.get("EntityType")
    symbols = entity_type.get("symbols") if isinstance(entity_type, dict) else None
    branches = types.get("Payload")
    expected = ["null", *(f"{ENTITY_NAMESPACE}.{n}" for n in ENTITY_NAMES)]
    if not isinstance(symbols, list) or sorted(symbols) != sorted(ENTITY_NAMES):
        raise ConfigError(f"schema {ENVELOPE_NAME}: EntityType symbols must be the six entity names")
    if not isinstance(branches, list) or branches[:1] != ["null"] or sorted(branches) != sorted(expected):
        raise ConfigError(f"schema {ENVELOPE_NAME}: Payload must be null or one of the six entity records")


def _inline(node: Any, definitions: dict[str, Any]) -> Any:
    """A copy of ``node`` with each named reference replaced by its definition (first use only)."""
    pending = dict(definitions)

    def walk(item: Any) -> Any:
        if isinstance(item, str) and item in pending:
            return copy.deepcopy(pending.pop(item))
        if isinstance(item, list):
            return [walk(x) for x in item]
        if isinstance(item, dict):
            return {
                key: walk(value) if key in ("type", "fields", "items", "values") else value
                for key, value in item.items()
            }
        return item

    return walk(node)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_REGISTRY = _load(_schema_dir())

REFERENCES: dict[str, tuple[Reference, ...]] = _REGISTRY.references
"""Entity name -> its association fields, in schema order; empty for Family and Provider."""
