"""``openapi.yaml``: where it is read from, and the parts of it generated from ``schemas/avro``.

The document is written by hand except for what the Avro schemas decide, which this module
generates into it so the contract cannot drift from the entities:

- ``components.schemas.<Entity>`` for the six entities: every field required (the client
  always sends every field, null included), no other field, and each value as the JSON
  encoders write it (``connector.sinks._cells``): dates ``YYYY-MM-DD``, timestamps UTC with
  milliseconds and ``Z``, decimals as exact strings at the schema's scale, enums by symbol;
- ``components.schemas.EntityRecord``: one of the six;
- ``components.parameters.Entity``: the entity names.

After editing the hand-written parts, run ``python -m connector.sinks._portal_openapi`` to
regenerate and normalise the file (it is written by ``yaml.safe_dump``, so YAML comments do not
survive: document in ``description`` fields). A unit test fails while the committed file differs
from this module's output.

Where the document is read from, first match wins: ``connector/sinks/openapi.yaml`` inside an
installed wheel (pyproject force-includes it), then ``openapi.yaml`` of a source checkout.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from connector.errors import ConfigError
from connector.model import ENTITY_NAMES, fingerprint, raw_schema
from connector.model.schemas import ENTITY_NAMESPACE
from connector.sinks.exceptions import SinkConfigError

__all__ = [
    "DATE_PATTERN",
    "OPENAPI_FILE",
    "TIMESTAMP_PATTERN",
    "decimal_pattern",
    "generate",
    "load_openapi",
    "openapi_path",
    "openapi_text",
    "record_schema",
]

OPENAPI_FILE = "openapi.yaml"
_CHECKOUT_FILE = Path(__file__).resolve().parents[2] / OPENAPI_FILE
DATE_PATTERN = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
TIMESTAMP_PATTERN = "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}[.][0-9]{3}Z$"
_INTEGER_RANGE = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}


def openapi_path() -> Path:
    """The file in use: the packaged copy, else the checkout's (module docstring)."""
    packaged = resources.files("connector.sinks").joinpath(OPENAPI_FILE)
    if packaged.is_file():
        return Path(str(packaged))
    if _CHECKOUT_FILE.is_file():
        return _CHECKOUT_FILE
    raise ConfigError(f"no {OPENAPI_FILE}: neither packaged in connector/sinks nor at {_CHECKOUT_FILE}")


@functools.cache
def openapi_text() -> str:
    """The document as written (the simulator serves it at ``/openapi.yaml``)."""
    return openapi_path().read_text(encoding="utf-8")


def load_openapi() -> dict[str, Any]:
    """A fresh parsed copy of the document."""
    document = yaml.safe_load(openapi_text())
    if not isinstance(document, dict):
        raise ConfigError(f"{OPENAPI_FILE} is not a YAML mapping")
    return document


def decimal_pattern(precision: int, scale: int) -> str:
    """How a ``decimal(precision, scale)`` is written: ``-12.50``, exactly ``scale`` places."""
    whole = f"(0|[1-9][0-9]{{0,{precision - scale - 1}}})"
    return f"^-?{whole}[.][0-9]{{{scale}}}$" if scale else f"^-?{whole}$"


def record_schema(entity: str) -> dict[str, Any]:
    """The JSON Schema of one ``entity`` record as the Portal receives it."""
    raw = raw_schema(entity)
    names = [field["name"] for field in raw["fields"]]
    return {
        "title": entity,
        "description": raw.get("doc", ""),
        "type": "object",
        "x-avro-schema": f"{ENTITY_NAMESPACE}.{entity}",
        "x-avro-fingerprint": fingerprint(entity),
        "additionalProperties": False,
        "required": names,
        "properties": {field["name"]: _property(entity, field) for field in raw["fields"]},
    }


def _property(entity: str, field: dict[str, Any]) -> dict[str, Any]:
    field_type = field["type"]
    nullable = isinstance(field_type, list) and "null" in field_type
    branches = [t for t in field_type if t != "null"] if isinstance(field_type, list) else [field_type]
    if len(branches) != 1:
        raise SinkConfigError(f"{entity}.{field['name']}: only a type or a nullable type can be sent")
    value = _value_schema(entity, field["name"], branches[0])
    if nullable:
        value["type"] = [value["type"], "null"]
        if "enum" in value:
            value["enum"] = [*value["enum"], None]
    return {"description": field.get("doc", ""), **value}


def _value_schema(entity: str, name: str, branch: Any) -> dict[str, Any]:
    kind = branch if isinstance(branch, str) else branch.get("logicalType") or branch.get("type")
    if kind == "string":
        return {"type": "string"}
    if kind == "enum":
        return {"type": "string", "enum": list(branch["symbols"])}
    if kind == "boolean":
        return {"type": "boolean"}
    if kind in _INTEGER_RANGE:
        low, high = _INTEGER_RANGE[kind]
        return {"type": "integer", "minimum": low, "maximum": high}
    if kind == "date":
        return {"type": "string", "format": "date", "pattern": DATE_PATTERN}
    if kind == "timestamp-millis":
        return {"type": "string", "format": "date-time", "pattern": TIMESTAMP_PATTERN}
    if kind == "decimal":
        precision, scale = int(branch["precision"]), int(branch.get("scale", 0))
        return {
            "type": "string",
            "pattern": decimal_pattern(precision, scale),
            "x-avro-decimal": {"precision": precision, "scale": scale},
        }
    raise SinkConfigError(f"{entity}.{name}: type {kind!r} has no Portal API encoding")


def generate(text: str) -> str:
    """``text`` (an ``openapi.yaml``) with its generated parts rewritten, normalised."""
    document = yaml.safe_load(text)
    components = document["components"]
    components["parameters"]["Entity"]["schema"]["enum"] = list(ENTITY_NAMES)
    schemas = components["schemas"]
    for entity in ENTITY_NAMES:
        schemas[entity] = record_schema(entity)
    schemas["EntityRecord"] = {
        "description": "A record of one of the entity types (generated from schemas/avro).",
        "oneOf": [{"$ref": f"#/components/schemas/{entity}"} for entity in ENTITY_NAMES],
    }
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line text; no anchors, so every part reads on its own."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _text(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None)


_Dumper.add_representer(str, _text)


def main(argv: Sequence[str] | None = None) -> int:
    """Regenerate the checkout's ``openapi.yaml`` in place, or ``--check`` that it is current."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is not current")
    parser.add_argument("path", nargs="?", type=Path, default=_CHECKOUT_FILE)
    args = parser.parse_args(argv)
    current = args.path.read_text(encoding="utf-8")
    wanted = generate(current)
    if args.check:
        print(f"{args.path}: {'current' if wanted == current else 'out of date'}")
        return 0 if wanted == current else 1
    args.path.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
