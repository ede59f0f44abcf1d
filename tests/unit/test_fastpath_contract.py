"""``connector._fastpath``: the one door to the extension, its version handshake and the plan check.

A stale extension (built from older sources, so with another contract version or none) is
refused with a message naming ``make venv``: ``on`` refuses to start with it, ``auto`` warns
and runs the Python path. Most tests stand a fake module in for the extension (so they run
without Rust); the ``fastpath`` ones patch the installed one.
"""

from __future__ import annotations

import copy
import importlib
import logging
import re
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from connector import _fastpath
from connector.config import load_settings
from connector.errors import ConfigError
from connector.ingest import service as ingest
from connector.ingest.service import IngestService
from connector.mapping import Mapper, load_mapping
from connector.mapping.fastpath import fastpath_plan
from connector.sinks.local import LocalStorage
from connector.snapshot import run
from connector.snapshot.cut import Cut, StateReader
from connector.snapshot.lag import Lag
from connector.snapshot.run import RunConfig, SnapshotRun

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "examples" / "mapping.yaml"


class _ReachedRustError(AssertionError):
    """The fake extension's ``Core`` was called: the plan reached Rust."""


def _fake(version: int | None) -> SimpleNamespace:
    """A stand-in for the extension that implements ``version`` (None: built before the handshake)."""

    def core(plan: str, markers: list[bytes]) -> Any:
        raise _ReachedRustError(plan)

    fake = SimpleNamespace(Core=core, peek=lambda raw: None, CutSpill=None, digest_diff=None)
    if version is not None:
        fake.CONTRACT_VERSION = version
    return fake


@pytest.fixture
def plan() -> dict[str, Any]:
    """The example mapping's plan for one topic, as the ingest hands it to the extension."""
    mapper = Mapper(load_mapping(EXAMPLE))
    built, _ = fastpath_plan(mapper, next(iter(mapper.spec.topics)))
    assert built["tables"], "the example compiles at least one table"
    return built


# -- the handshake -----------------------------------------------------------------------


def test_the_extensions_sources_and_this_package_name_the_same_contract_version() -> None:
    source = (ROOT / "fastpath" / "src" / "contract.rs").read_text()
    found = re.search(r"pub const CONTRACT_VERSION: u32 = (\d+);", source)
    assert found is not None
    assert int(found.group(1)) == _fastpath.CONTRACT_VERSION


@pytest.mark.parametrize("version", [_fastpath.CONTRACT_VERSION - 1, _fastpath.CONTRACT_VERSION + 1, None])
def test_a_stale_extension_is_refused_naming_the_rebuild_command(
    monkeypatch: pytest.MonkeyPatch, version: int | None
) -> None:
    monkeypatch.setitem(sys.modules, _fastpath.EXTENSION, _fake(version))
    with pytest.raises(_fastpath.StaleExtensionError, match="rebuild it with `make venv`"):
        _fastpath.load()
    reason = _fastpath.fastpath_available()
    assert reason is not None
    assert "stale" in reason
    assert "make venv" in reason
    assert _fastpath.load_or_none() is None


def test_an_extension_of_this_contract_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake(_fastpath.CONTRACT_VERSION)
    monkeypatch.setitem(sys.modules, _fastpath.EXTENSION, fake)
    assert _fastpath.fastpath_available() is None
    assert _fastpath.load() is fake


def test_a_missing_extension_is_named_as_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, _fastpath.EXTENSION, None)  # import then raises ImportError
    reason = _fastpath.fastpath_available()
    assert reason is not None
    assert reason.startswith("the carecloud_fastpath extension is not installed")
    assert _fastpath.load_or_none() is None


@pytest.mark.fastpath
def test_the_installed_extension_speaks_this_contract_and_is_refused_once_its_version_differs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = importlib.import_module(_fastpath.EXTENSION)
    assert module.CONTRACT_VERSION == _fastpath.CONTRACT_VERSION
    assert _fastpath.fastpath_available() is None
    monkeypatch.setattr(module, "CONTRACT_VERSION", _fastpath.CONTRACT_VERSION - 1)
    with pytest.raises(_fastpath.StaleExtensionError) as refused:
        _fastpath.load()
    assert "`make venv`" in str(refused.value)
    assert f"contract {_fastpath.CONTRACT_VERSION - 1}" in str(refused.value)


def test_a_stale_extension_stops_the_ingest_when_on_and_falls_back_to_python_when_auto(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, _fastpath.EXTENSION, _fake(_fastpath.CONTRACT_VERSION - 1))

    def service(fast_path: str) -> IngestService:
        settings = load_settings(
            kafka={"bootstrap_servers": "localhost:1"},  # never contacted: nothing here starts
            ingest={"mapping_file": str(EXAMPLE), "state_dir": tmp_path, "fast_path": fast_path},
        )
        return IngestService(settings, load_mapping(EXAMPLE))

    with pytest.raises(ConfigError, match=r"CARECLOUD_INGEST_FAST_PATH=on, but .*stale.*`make venv`"):
        service("on")
    with caplog.at_level(logging.WARNING, logger=ingest.log.name):
        assert service("auto").fast == {}
    assert "compiled fast path unavailable" in caplog.text
    assert "make venv" in getattr(caplog.records[-1], "reason", "")


def test_a_stale_extension_stops_the_snapshot_when_on_and_falls_back_to_python_when_auto(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, _fastpath.EXTENSION, _fake(None))

    def snapshot(fast_path: str) -> SnapshotRun:
        return SnapshotRun(
            RunConfig(state_topic="state", fast_path=fast_path, work_dir=tmp_path),  # type: ignore[arg-type]
            {"bootstrap.servers": "localhost:1"},  # never contacted: nothing here reads
            LocalStorage(tmp_path / "bucket"),
            take_cut=lambda day: (Cut("state", {}), Lag()),
        )

    with pytest.raises(ConfigError, match=r"CARECLOUD_SNAPSHOT_FAST_PATH=on, but .*stale.*`make venv`"):
        snapshot("on")
    with caplog.at_level(logging.WARNING, logger=run.log.name):
        auto = snapshot("auto")
    assert "compiled snapshot reader unavailable" in caplog.text
    with auto._reader(Cut("state", {})) as reader:
        assert type(reader) is StateReader


# -- the plan ----------------------------------------------------------------------------


def test_the_plans_the_mapping_builds_are_valid(plan: dict[str, Any]) -> None:
    mapper = Mapper(load_mapping(EXAMPLE))
    for topic in mapper.spec.topics:
        _fastpath.validate_plan(fastpath_plan(mapper, topic)[0])
    _fastpath.validate_plan(plan)


def _first(plan: dict[str, Any], kind: str) -> dict[str, Any]:
    """The first field of the plan whose source is of ``kind``."""
    for table in plan["tables"].values():
        for field in table["fields"]:
            if field["source"]["kind"] == kind:
                return field  # type: ignore[no-any-return]
    raise AssertionError(f"the example plan has no {kind} field")


def _table(plan: dict[str, Any]) -> dict[str, Any]:
    return next(iter(plan["tables"].values()))  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("where", "change"),
    [
        ("plan", lambda p: p.update(version=2)),
        ("plan.tables", lambda p: _table(p).update(topic="x")),
        ("entity_id[0]", lambda p: _table(p)["entity_id"][0].update(extra="id")),
        ("fields[", lambda p: _table(p)["fields"][0].update(default="1")),
        (".source", lambda p: _first(p, "column")["source"].update(fallback=None)),
        (".source.conv", lambda p: _first(p, "column")["source"]["conv"].update(strict=True)),
    ],
)
def test_a_plan_with_a_field_the_contract_does_not_know_is_refused_before_it_reaches_rust(
    plan: dict[str, Any], monkeypatch: pytest.MonkeyPatch, where: str, change: Any
) -> None:
    monkeypatch.setitem(sys.modules, _fastpath.EXTENSION, _fake(_fastpath.CONTRACT_VERSION))
    bad = copy.deepcopy(plan)
    change(bad)
    with pytest.raises(_fastpath.PlanError, match=r"unknown field|a segment is one of") as refused:
        _fastpath.core(bad, [])
    assert where in str(refused.value)
    with pytest.raises(_ReachedRustError):  # the plan as built goes through to the extension
        _fastpath.core(plan, [])


def test_an_unknown_kind_a_missing_field_and_a_wrong_shape_are_refused(plan: dict[str, Any]) -> None:
    unknown_conv = copy.deepcopy(plan)
    _first(unknown_conv, "column")["source"]["conv"] = {"kind": "money"}
    missing = copy.deepcopy(plan)
    del _first(missing, "column")["source"]["path"]
    not_a_list = copy.deepcopy(plan)
    _table(not_a_list)["fields"] = {}
    for bad, message in [
        (unknown_conv, "unknown kind 'money'"),
        (missing, "missing field(s) path"),
        (not_a_list, "fields: not a list"),
    ]:
        with pytest.raises(_fastpath.PlanError, match=re.escape(message)):
            _fastpath.validate_plan(bad)


@pytest.mark.fastpath
def test_the_extension_itself_refuses_an_unknown_field(plan: dict[str, Any]) -> None:
    """serde's check behind the Python one (a converter without fields is checked by Python only)."""
    bad = copy.deepcopy(plan)
    _table(bad)["topic"] = "x"
    core = _fastpath.load().Core
    with pytest.raises(ValueError, match="unknown field `topic`"):
        core(orjson.dumps(bad).decode(), [])
