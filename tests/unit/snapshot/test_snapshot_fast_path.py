"""``snapshot.fast_path``: auto reads with the compiled spill when it loads, on insists, off never."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from connector.errors import ConfigError
from connector.sinks.local import LocalStorage
from connector.snapshot import run
from connector.snapshot.compiled_cut import CompiledStateReader
from connector.snapshot.cut import Cut, StateReader
from connector.snapshot.lag import Lag
from connector.snapshot.run import RunConfig, SnapshotRun


def _reader(tmp_path: Path, fast_path: str) -> StateReader | CompiledStateReader:
    snapshot = SnapshotRun(
        RunConfig(state_topic="state", fast_path=fast_path, work_dir=tmp_path),  # type: ignore[arg-type]
        {"bootstrap.servers": "localhost:1"},  # never contacted: nothing here reads
        LocalStorage(tmp_path / "bucket"),
        take_cut=lambda day: (Cut("state", {}), Lag()),
    )
    return snapshot._reader(Cut("state", {}))


@pytest.mark.fastpath
def test_auto_and_on_read_with_the_compiled_spill_and_off_in_python(tmp_path: Path) -> None:
    for fast_path, kind in [("auto", CompiledStateReader), ("on", CompiledStateReader), ("off", StateReader)]:
        with _reader(tmp_path, fast_path) as reader:
            assert type(reader) is kind


def test_without_the_extension_auto_warns_and_on_refuses_to_start_naming_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(
        run, "fastpath_available", lambda: "the carecloud_fastpath extension is not installed"
    )
    with caplog.at_level(logging.WARNING, logger=run.log.name), _reader(tmp_path, "auto") as reader:
        assert type(reader) is StateReader
    assert "compiled snapshot reader unavailable" in caplog.text
    with pytest.raises(ConfigError, match="CARECLOUD_SNAPSHOT_FAST_PATH=on, but the carecloud_fastpath"):
        _reader(tmp_path, "on")
