"""``validate``: every settings problem and every mapping problem at once, no secret in the output."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from connector.cli import main
from connector.config.commands import mask, secret_values, validate

ROOT = Path(__file__).parents[3]
SECRET = "Pa55-Zanzibar-Quill"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets: a developer's CARECLOUD_* variables must not leak in."""
    for name in os.environ:
        if name.upper().startswith("CARECLOUD_"):
            monkeypatch.delenv(name)


def _good(monkeypatch: pytest.MonkeyPatch, mapping: Path = ROOT / "examples" / "mapping.yaml") -> None:
    monkeypatch.setenv("CARECLOUD_KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    monkeypatch.setenv("CARECLOUD_INGEST_MAPPING_FILE", str(mapping))


def test_a_valid_configuration_exits_0_and_counts_the_mapping(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _good(monkeypatch)
    monkeypatch.setenv("CARECLOUD_S3_BUCKET", "b")
    assert main(["validate"]) == 0
    out = capsys.readouterr().out
    assert "settings: ok" in out
    assert "(6 tables, 6 topics)" in out
    assert out.rstrip().endswith("valid")


def test_every_bad_setting_is_named_at_once_and_secrets_never_printed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _good(monkeypatch)
    monkeypatch.delenv("CARECLOUD_KAFKA_BOOTSTRAP_SERVERS")
    monkeypatch.setenv("CARECLOUD_INGEST_BATCH_MAX_EVENTS", "0")
    monkeypatch.setenv("CARECLOUD_OPS_LOG_FORMAT", "xml")
    monkeypatch.setenv("CARECLOUD_SNAPSHOT_ENABLED", "true")
    monkeypatch.setenv("CARECLOUD_SNAPSHOT_API_ENABLED", "true")
    monkeypatch.setenv("CARECLOUD_PORTAL_API_KEY", SECRET)
    monkeypatch.setenv("CARECLOUD_KAFKA_SASL_PASSWORD", SECRET)
    monkeypatch.setenv("CARECLOUD_S3_SECRET_ACCESS_KEY", SECRET)
    report = validate()
    named = " ".join(report.problems)
    for variable in (
        "CARECLOUD_KAFKA_BOOTSTRAP_SERVERS",
        "CARECLOUD_INGEST_BATCH_MAX_EVENTS",
        "CARECLOUD_OPS_LOG_FORMAT",
        "CARECLOUD_S3_BUCKET",
        "CARECLOUD_PORTAL_BASE_URL",
    ):
        assert variable in named
    assert len(report.problems) == len(set(report.problems))  # sink problems are not repeated
    assert not report.valid
    assert main(["validate"]) == 1
    assert main(["validate", "--json"]) == 1
    out = capsys.readouterr().out
    assert SECRET not in out
    doc = orjson.loads(out.splitlines()[-1])
    assert doc["valid"] is False
    assert "CARECLOUD_OPS_LOG_FORMAT: Input should be 'json' or 'text'" in doc["settings"]["problems"]


def test_mapping_problems_carry_their_line_even_when_a_setting_is_wrong(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(
        "version: 1\ntopics:\n  t: {format: debezium-json}\ntables:\n  public.family:\n"
        '    entity: Famly\n    entity_id: "FAM-{family_id}"\n    fields:\n      FamilyName: family_name\n'
        '  public.provider:\n    entity: Provider\n    entity_id: "PRV-{id}"\n'
        "    fields:\n      NoSuchField: x\n"
    )
    _good(monkeypatch, mapping)
    monkeypatch.setenv(
        "CARECLOUD_INGEST_BATCH_MAX_MS", "-1"
    )  # the ingest model fails; the file is still read
    report = validate()
    assert report.mapping_file == str(mapping)
    assert f"{mapping}:6: tables.public.family.entity: must be one of" in report.mapping_problems[0]
    assert f"{mapping}:14: tables.public.provider.fields.NoSuchField: Provider has no such field" in (
        report.mapping_problems
    )
    assert main(["validate"]) == 1
    out = capsys.readouterr().out
    assert f"{mapping}:6:" in out
    assert "CARECLOUD_INGEST_BATCH_MAX_MS" in out


def test_sink_settings_are_warnings_while_the_in_process_snapshot_is_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _good(monkeypatch)
    report = validate()
    assert report.valid
    assert [w.split(":")[0] for w in report.warnings] == ["CARECLOUD_S3_BUCKET"]


def test_the_mapping_option_overrides_the_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _good(monkeypatch)
    report = validate(mapping=tmp_path / "missing.yaml")
    assert report.mapping_problems == [
        f"{tmp_path / 'missing.yaml'}: cannot read mapping file (FileNotFoundError)"
    ]


def test_secret_values_are_found_by_type_in_every_model(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "CARECLOUD_SFTP_PASSWORD": "abcd",
        "carecloud_portal_api_key": "longer-secret",  # names are case-insensitive
        "CARECLOUD_S3_BUCKET": "not-a-secret",
    }
    assert secret_values(env) == ["longer-secret", "abcd"]
    assert mask("x longer-secret abcd y", secret_values(env)) == "x *** *** y"


def test_a_bad_snapshot_setting_does_not_hide_the_missing_bucket(monkeypatch: pytest.MonkeyPatch) -> None:
    _good(monkeypatch)
    monkeypatch.setenv("CARECLOUD_SNAPSHOT_ENABLED", "true")
    monkeypatch.setenv("CARECLOUD_SNAPSHOT_FORMAT", "parquet")
    problems = [p.split(":")[0] for p in validate().problems]
    assert problems == ["CARECLOUD_SNAPSHOT_FORMAT", "CARECLOUD_S3_BUCKET"]
