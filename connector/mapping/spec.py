"""The mapping file: which source table becomes which entity, field by field.

Validated once at start-up against the entity schemas; every problem is collected and
reported with its line, so an operator fixes a file in one pass. The format (see
``docs/mapping.md`` and ``examples/mapping.yaml``)::

    version: 1
    topics:                       # how to decode each topic
      pg.public.family: {format: debezium-json, decimal_handling: precise}
    tables:                       # source table (schema.table / db.table) -> entity
      public.family:
        entity: Family
        entity_id: "FAM-{id}"     # template over primary-key columns: never random
        fields:                   # optional overrides; other fields: same-name column
          FamilyName: family_name                  # a column
          City: {path: address.city}               # a path into a JSON column
          Country: {const: US}                     # a constant
          Status: {column: status, enum: {A: ACTIVE, I: INACTIVE}}
      public.member:
        entity: FamilyMember
        entity_id: "MEM-{id}"
        fields:
          FamilyId: {references: family_id}        # the parent's entity_id template

The validated mapping's classes are ``_spec_model``'s, the checks ``_spec_check``'s; every name
is importable from here.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from connector.mapping._spec_check import Validator
from connector.mapping._spec_model import (
    DecimalHandling,
    FieldSpec,
    Format,
    MappingSpec,
    TableSpec,
    TimeUnit,
    TopicSpec,
)
from connector.mapping._yaml import load_located
from connector.mapping.exceptions import MappingConfigError

__all__ = [
    "DecimalHandling",
    "FieldSpec",
    "Format",
    "MappingSpec",
    "TableSpec",
    "TimeUnit",
    "TopicSpec",
    "load_mapping",
    "parse_mapping",
]


def load_mapping(path: str | Path) -> MappingSpec:
    """Read and validate a mapping file; raise ``MappingConfigError`` listing every problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingConfigError([f"{p}: cannot read mapping file ({exc.__class__.__name__})"]) from None
    return parse_mapping(text, origin=str(p))


def parse_mapping(text: str, *, origin: str = "<mapping>") -> MappingSpec:
    """Validate mapping YAML text against the entity schemas."""
    try:
        doc = load_located(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{origin}:{mark.line + 1}" if mark is not None else origin
        raise MappingConfigError([f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})"]) from None
    return Validator(origin).run(doc)
