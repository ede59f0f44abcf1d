"""The dry run's storage: writes stay local, only published manifests are read through."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from connector.sinks.exceptions import PreconditionFailedError
from connector.sinks.local import LocalStorage
from connector.snapshot.commands import EXIT_PARTIAL, exit_status
from connector.snapshot.dry_run import DryRunStorage
from connector.snapshot.manifest import EntityResult, Manifest

JSON = "application/json"


def test_writes_stay_local_and_only_manifests_are_read_through(tmp_path: Path) -> None:
    real = LocalStorage(tmp_path / "real")
    real.put_bytes("cc/2026-12-01/_manifest.json", b"{}", content_type=JSON)
    real.put_bytes("cc/2026-12-02/_lease.json", b"{}", content_type=JSON)  # a real run's lease
    dry = DryRunStorage(LocalStorage(tmp_path / "out"), real)

    dry.put_bytes("cc/2026-12-02/_lease.json", b'{"dry":1}', content_type=JSON, if_none_match=True)
    dry.put_stream("cc/2026-12-02/Family.csv.gz", [b"a", b"b"], content_type="application/gzip")

    assert real.list_keys("cc/") == ["cc/2026-12-01/_manifest.json", "cc/2026-12-02/_lease.json"]
    lease = real.get("cc/2026-12-02/_lease.json")
    assert lease is not None
    assert lease[0] == b"{}"  # the real run's lease is untouched
    assert dry.list_keys("cc/") == [
        "cc/2026-12-01/_manifest.json",
        "cc/2026-12-02/Family.csv.gz",
        "cc/2026-12-02/_lease.json",
    ]
    assert dry.get("cc/2026-12-01/_manifest.json") is not None  # the baseline, read through
    with pytest.raises(PreconditionFailedError):  # a published date stays published
        dry.put_bytes("cc/2026-12-01/_manifest.json", b"{}", content_type=JSON, if_none_match=True)


def _manifest(*statuses: str) -> Manifest:
    entities = tuple(
        EntityResult(entity=f"E{i}", status=status, route="file", records=1, schema_fingerprint="f")
        for i, status in enumerate(statuses)
    )
    now = dt.datetime(2026, 12, 6, tzinfo=dt.UTC)
    return Manifest("s", now.date(), now, {}, {}, {}, entities, "report")


def test_exit_status_is_zero_only_when_every_entity_was_delivered() -> None:
    assert exit_status(_manifest("delivered", "delivered")) == 0
    assert exit_status(_manifest("delivered", "blocked")) == EXIT_PARTIAL
    assert exit_status(_manifest("refused")) == EXIT_PARTIAL
    assert exit_status(None) == EXIT_PARTIAL
