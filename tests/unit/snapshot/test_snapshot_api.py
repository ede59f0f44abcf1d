"""The snapshot stage's public surface: the package exports and every module's ``__all__``."""

from __future__ import annotations

import importlib

import pytest

import connector.snapshot


def test_exported_names_are_what_was_meant() -> None:
    assert sorted(connector.snapshot.__all__) == sorted(
        [
            "API_BATCH_LIMIT",
            "SnapshotRun",
            "Scheduler",
            "RunResult",
            "RunConfig",
            "Outcome",
            "Manifest",
            "LeaseLostError",
            "LeaseBusyError",
            "EntityResult",
            "DEFAULT_FILE_THRESHOLD",
            "Action",
            "CountCheck",
            "Decision",
            "EntityOrphans",
            "MissingParent",
            "NaiveDatetimeError",
            "Orphan",
            "OrphanPolicy",
            "OrphanReport",
            "Route",
            "Schedule",
            "SnapshotArgumentError",
            "SnapshotConfigError",
            "api_batches",
            "count_change",
            "decide_on_startup",
            "next_run",
            "orphans",
            "route_for",
            "run_window",
        ]
    )
    for name in connector.snapshot.__all__:
        assert getattr(connector.snapshot, name) is not None


@pytest.mark.parametrize(
    "module",
    ["checks", "exceptions", "lag", "lease", "manifest", "plan", "routing", "run", "schedule", "scheduler"],
)
def test_every_module_declares_its_public_names(module: str) -> None:
    loaded = importlib.import_module(f"connector.snapshot.{module}")
    assert loaded.__all__
    for name in loaded.__all__:
        assert getattr(loaded, name) is not None
