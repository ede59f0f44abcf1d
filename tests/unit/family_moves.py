"""A primary-key update of one family, as the mapper gives it with source columns kept: what
the carry tests (``tests/unit/state/test_apply.py``) and the re-mapping pass's tests
(``tests/unit/ingest/test_remap.py``) move across keys, partitions and mapping versions."""

from __future__ import annotations

from dataclasses import replace

from connector.devtools.generator import family_events
from connector.mapping import Mapper, parse_mapping
from connector.mapping.change import EntityChange
from connector.source import Position, make_decoder
from connector.source.events import Op
from connector.source.version import Version

__all__ = ["FAMILY_MAPPING", "FAMILY_ROLLOUT", "FAMILY_TOPIC", "NAME", "NOTES", "family_update"]

FAMILY_TOPIC = "benefits.public.family"
FAMILY_MAPPING = """\
version: 1
topics:
  benefits.public.family: {format: debezium-json}
tables:
  public.family:
    entity: Family
    entity_id: "FAM-{family_id}"
    fields:
      FamilyName: family_name
      Status: {column: status, enum: {A: ACTIVE, P: PENDING, S: SUSPENDED, T: TERMINATED}}
      PlanCode: plan_code
      CoverageStartDate: coverage_start
      CoverageEndDate: coverage_end
      StateCode: {path: address.state}
      PostalCode: {const: null}
      PrimaryEmail: email
      DeductibleAmount: deductible
      OutOfPocketMaximum: oop_max
      UpdatedAt: updated_at
"""
# A rollout: PostalCode now reads a column the first mapping left out.
FAMILY_ROLLOUT = FAMILY_MAPPING.replace("{const: null}", "{path: address.zip}")
NAME, NOTES = "Okafor-Lindqvist " * 200, "notes " * 500  # long: TOASTed in PostgreSQL


def family_update(
    toasted: frozenset[str], donor: str = FAMILY_MAPPING, mover: str = FAMILY_MAPPING
) -> tuple[EntityChange, EntityChange, EntityChange]:
    """``UPDATE family SET family_id = 22 WHERE family_id = 2`` as the mapper gives it, with
    source columns kept: family 2's row (with an unmapped TOASTed ``notes`` column, status T),
    the delete under the old key and the create under the new one, whose ``toasted`` columns
    carried the unchanged-TOAST placeholder. ``donor``: the mapping the old row was mapped by;
    ``mover``: the one the update's two events were (another one: a rollout between them)."""
    key, value = next((k, v) for k, v in family_events(1, 0, seed=5) if v is not None)
    base = make_decoder("debezium-json").decode(key, value, None, Position(FAMILY_TOPIC, 0, 0))
    assert base is not None
    old_mapper = Mapper(parse_mapping(donor), source_columns=True)
    mapper = Mapper(parse_mapping(mover), source_columns=True)
    row = {**base.row, "family_id": 2, "family_name": NAME, "notes": NOTES, "status": "T"}
    old = replace(base, key={"family_id": 2}, row=row, version=Version(1, 100, 100, 0, 0))
    delete = replace(
        base,
        op=Op.DELETE,
        key={"family_id": 2},
        row={"family_id": 2},
        new_key={"family_id": 22},
        version=Version(1, 200, 200, 0, 1),
    )
    create = replace(
        base,
        key={"family_id": 22},
        row={k: v for k, v in {**row, "family_id": 22}.items() if k not in toasted},
        unavailable=toasted,
        old_key={"family_id": 2},
        version=Version(1, 200, 200, 0, 3),
    )
    return old_mapper.map(old), mapper.map(delete), mapper.map(create)
