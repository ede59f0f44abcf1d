"""Build a state topic with a known content, run the snapshot over it, read what was published."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
from collections.abc import Callable, Mapping
from typing import Any

from connector.model import ENTITY_NAMES, REFERENCES, samples
from connector.ops.metrics import Metrics
from connector.sinks.storage import Storage
from connector.snapshot.cut import take_cut
from connector.snapshot.lag import Lag
from connector.snapshot.manifest import Manifest
from connector.snapshot.run import ApiRoute, RunConfig, SnapshotRun
from connector.source.version import Version
from connector.state.codec import encode_row, state_key
from connector.state.resolve import StateRow
from tests.kafka_helpers import KafkaTestCluster

State = dict[str, dict[str, dict[str, Any]]]
"""entity -> EntityId -> record."""

PREFIXES = {
    "Family": "FAM",
    "Provider": "PRV",
    "FamilyMember": "MEM",
    "Care": "CAR",
    "Claim": "CLM",
    "EOP": "EOP",
}


def record(entity: str, number: int, **refs: str) -> dict[str, Any]:
    """The entity's sample record with its own EntityId and the given association fields."""
    values = dict(samples.sample(entity))
    values["EntityId"] = f"{PREFIXES[entity]}-{number:07d}"
    values.update(refs)
    return values


def tree(families: int, *, providers: int = 3, claims_per_care: int = 1) -> State:
    """A consistent state: every family has two members, each member one care, claims and EOPs."""
    state: State = {entity: {} for entity in ENTITY_NAMES}
    for p in range(1, providers + 1):
        state["Provider"][f"PRV-{p:07d}"] = record("Provider", p)
    claim_no = 0
    for f in range(1, families + 1):
        fam = record("Family", f)
        state["Family"][fam["EntityId"]] = fam
        for m in (2 * f - 1, 2 * f):
            member = record("FamilyMember", m, FamilyId=fam["EntityId"])
            state["FamilyMember"][member["EntityId"]] = member
            provider = f"PRV-{(m % providers) + 1:07d}"
            care = record("Care", m, FamilyMemberId=member["EntityId"], ProviderId=provider)
            state["Care"][care["EntityId"]] = care
            for _ in range(claims_per_care):
                claim_no += 1
                claim = record("Claim", claim_no, CareId=care["EntityId"], ProviderId=provider)
                state["Claim"][claim["EntityId"]] = claim
                eop = record("EOP", claim_no, ClaimId=claim["EntityId"])
                state["EOP"][eop["EntityId"]] = eop
    return state


def seed_state(kafka: KafkaTestCluster, topic: str, state: State, *, version: int = 1) -> None:
    """Write every record as a live state row (the ingest's encoding) into the state topic."""
    rows = [
        (state_key(entity, entity_id), encode_row(StateRow(Version(1, version, 0, 0, 0), False, values)))
        for entity in ENTITY_NAMES
        for entity_id, values in state[entity].items()
    ]
    kafka.seed_topic(topic, rows)


def delete_rows(
    kafka: KafkaTestCluster, topic: str, keys: list[tuple[str, str]], *, version: int = 2
) -> None:
    """Delete markers for ``(entity, EntityId)`` pairs, newer than ``seed_state``'s rows."""
    v = Version(1, version, 0, 0, 0)
    kafka.seed_topic(
        topic, [(state_key(e, i), encode_row(StateRow(v, True, {}, delete_floor=v))) for e, i in keys]
    )


def snapshot_run(
    kafka: KafkaTestCluster,
    topic: str,
    storage: Storage,
    *,
    api: ApiRoute | None = None,
    metrics: Metrics | None = None,
    clock: Callable[[], dt.datetime] | None = None,
    **config: Any,
) -> SnapshotRun:
    """A run that cuts the state topic at once (lag policy ``go``; lag itself is tested elsewhere)."""
    return SnapshotRun(
        RunConfig(state_topic=topic, **config),
        kafka.config(),
        storage,
        take_cut=lambda day: (take_cut(kafka.config(), topic), Lag()),
        api=api,
        metrics=metrics,
        **({"clock": clock} if clock is not None else {}),
    )


def published(storage: Storage, manifest: Manifest) -> dict[str, list[dict[str, str]]]:
    """Every delivered file named by the manifest, read back as CSV rows (cells as strings)."""
    files = {}
    for result in manifest.entities:
        if result.key is None:
            continue
        found = storage.get(result.key)
        assert found is not None, f"the manifest names {result.key}, which is not stored"
        data, stored = found
        assert (stored.size, stored.sha256) == (result.bytes, result.sha256)
        text = gzip.decompress(data).decode("utf-8")
        files[result.entity] = list(csv.DictReader(io.StringIO(text)))
    return files


def ids(rows: list[dict[str, str]]) -> list[str]:
    return [row["EntityId"] for row in rows]


def expected_ids(state: Mapping[str, Mapping[str, Any]], entity: str) -> list[str]:
    return sorted(state[entity])


def children_point_at_parents(files: dict[str, list[dict[str, str]]]) -> bool:
    """No delivered record references a record that was not delivered."""
    delivered = {entity: set(ids(rows)) for entity, rows in files.items()}
    return all(
        row[ref.field] in delivered.get(ref.parent, set())
        for entity, rows in files.items()
        for row in rows
        for ref in REFERENCES[entity]
    )
