"""Through the broker, the compiled reader and CSV writer publish the very bytes the Python path does.

One state topic, read over the same cut twice, with ``snapshot.fast_path`` off and on: every
file, the report and the manifest's checks and per-file figures must be identical. The state
has what the two paths could disagree on: a key in two partitions, deletes, an orphan with
descendants, a row missing an unchanged-TOAST value, and values the compiled writer declines.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import pytest

from connector.model import ENTITY_NAMES
from connector.sinks.local import LocalStorage
from connector.snapshot.run import Outcome, RunResult
from connector.source.version import Version
from connector.state.codec import encode_row, state_key
from connector.state.resolve import StateRow
from tests.integration.snapshot_helpers import delete_rows, seed_state, snapshot_run, tree
from tests.kafka_helpers import KafkaTestCluster

pytestmark = [pytest.mark.integration, pytest.mark.fastpath]

DAY = dt.date(2026, 11, 25)


def _odd_rows() -> list[tuple[bytes, bytes]]:
    """Rows the compiled writer declines or that only the merge resolves."""

    def row(
        entity: str, entity_id: str, major: int, changes: dict[str, Any], **doc: Any
    ) -> tuple[bytes, bytes]:
        values = dict(tree(40)[entity][entity_id], **changes)
        encoded = orjson.loads(encode_row(StateRow(Version(1, major, 0, 0, 0), False, values)))
        encoded.update(doc)
        for name in doc.get("m", []):
            del encoded["r"][name]
        return state_key(entity, entity_id), orjson.dumps(encoded)

    return [
        row("Claim", "CLM-0000002", 5, {"BilledAmount": "-0.00", "DenialReasonCode": "=HYPERLINK(x)"}),
        row("Claim", "CLM-0000003", 5, {"UpdatedAt": "2024-01-01T12:00:00+05:30"}),
        row("Family", "FAM-0000004", 5, {"FamilyName": 'Smith, "Jr"\r\nII'}),
        row("EOP", "EOP-0000005", 5, {}, m=["UpdatedAt"]),  # incomplete: held out, listed
    ]


def _run(kafka: KafkaTestCluster, topic: str, work: Path, fast_path: str, fmt: str) -> tuple[RunResult, Path]:
    bucket = work / f"bucket-{fast_path}-{fmt}"
    result = snapshot_run(
        kafka, topic, LocalStorage(bucket), work_dir=work, fast_path=fast_path, format=fmt
    ).run(DAY)
    assert result.outcome is Outcome.PUBLISHED
    return result, bucket


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_the_compiled_path_publishes_the_bytes_of_the_python_path(
    kafka: KafkaTestCluster, tmp_path: Path, fmt: str
) -> None:
    topic = kafka.new_topic(3, {"cleanup.policy": "compact"}, prefix="state")
    seed_state(kafka, topic, tree(40))
    seed_state(kafka, topic, {e: dict(list(rows.items())[:3]) for e, rows in tree(40).items()}, version=4)
    kafka.seed_topic(topic, _odd_rows())
    delete_rows(kafka, topic, [("FamilyMember", "MEM-0000007"), ("EOP", "EOP-0000001")], version=9)

    python, python_files = _run(kafka, topic, tmp_path, "off", fmt)
    compiled, compiled_files = _run(kafka, topic, tmp_path, "on", fmt)

    assert python.manifest is not None
    assert compiled.manifest is not None
    assert compiled.manifest.cut["end_offsets"] == python.manifest.cut["end_offsets"]
    assert compiled.manifest.checks == python.manifest.checks
    assert compiled.manifest.checks["orphans"]["Care"]["orphans"] == 1  # MEM-0000007's care, and below
    assert compiled.manifest.checks["incomplete"]["EOP"] == 1
    for ours, theirs in zip(compiled.manifest.entities, python.manifest.entities, strict=True):
        assert (ours.entity, ours.records, ours.held_out, ours.bytes, ours.sha256) == (
            theirs.entity,
            theirs.records,
            theirs.held_out,
            theirs.bytes,
            theirs.sha256,
        )
    written = sorted(p.relative_to(python_files) for p in python_files.rglob("*.gz"))
    assert len(written) == 2 * len(ENTITY_NAMES)  # a file and the delivered set's digest each
    for name in written:
        assert (compiled_files / name).read_bytes() == (python_files / name).read_bytes()
    report = {k: v for k, v in _report(python_files).items() if k != "snapshot_id"}
    assert {k: v for k, v in _report(compiled_files).items() if k != "snapshot_id"} == report


def _report(bucket: Path) -> dict[str, Any]:
    found = list(bucket.rglob("_report.json"))
    assert len(found) == 1
    report: dict[str, Any] = orjson.loads(found[0].read_bytes())
    return report
