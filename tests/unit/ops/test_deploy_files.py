"""The deployment files against the code: metric names, settings names, alert copies, the image.

These read the files as they are in the repository (no kubectl, no promtool); the rendered
manifests and promtool's checks are in tests/integration/test_deploy.py.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

import connector.config.settings as settings_module
from connector.config.settings import OpsSettings
from connector.ops.metrics import Metrics

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "k8s" / "base"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts_test.yaml"
DASHBOARD = DEPLOY / "grafana" / "carecloud-connector.json"

PENDING_PREFIXES: set[str] = set()
"""Env prefixes the manifests may use before their settings class exists (none now). When a
class lands, this test fails until the prefix is removed here and the names agree."""


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _exported_names() -> set[str]:
    """Every series name a scrape of the connector can contain."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("", "_sum", "_count", "_created"),
        }.get(family.type, ("",))
        names.update(family.name + s for s in suffixes)
    return names


def _alert_rules() -> list[dict[str, Any]]:
    return [rule for group in _load(ALERTS)["groups"] for rule in group["rules"]]


def _dashboard_exprs() -> Iterator[tuple[str, str]]:
    def walk(panels: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
        for panel in panels:
            for target in panel.get("targets", []):
                yield panel["title"], target["expr"]
            yield from walk(panel.get("panels", []))

    dashboard = json.loads(DASHBOARD.read_text())
    yield from walk(dashboard["panels"])
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            yield var["name"], var["definition"]


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bcarecloud_[a-z0-9_]+", expr))


def test_every_metric_the_alerts_and_the_dashboard_query_is_exported() -> None:
    exported = _exported_names()
    used: dict[str, set[str]] = {}
    for rule in _alert_rules():
        used[rule["alert"]] = _metric_names(rule["expr"])
    for title, expr in _dashboard_exprs():
        used.setdefault(title, set()).update(_metric_names(expr))
    assert all(used.values()), [where for where, names in used.items() if not names]
    missing = {where: names - exported for where, names in used.items() if names - exported}
    assert missing == {}


def test_the_dashboard_has_the_panels_on_call_needs() -> None:
    text = " ".join(expr for _, expr in _dashboard_exprs())
    for metric in (
        "carecloud_consumer_lag_messages",
        "carecloud_events_consumed_total",
        "carecloud_dlq_events_total",
        "carecloud_state_entities",
        "carecloud_last_successful_delivery_timestamp_seconds",
        "carecloud_deadline_slack_seconds",
        "carecloud_api_responses_total",
    ):
        assert metric in text
    ids = [p["id"] for p in json.loads(DASHBOARD.read_text())["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_the_prometheusrule_carries_exactly_the_plain_rules_file() -> None:
    rule = _load(BASE / "prometheusrule.yaml")
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"] == _load(ALERTS), (
        "deploy/k8s/base/prometheusrule.yaml's spec must equal deploy/prometheus/alerts.yaml"
    )


def test_every_alert_has_a_firing_and_a_quiet_promtool_case() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in _load(ALERT_TESTS)["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = {rule["alert"] for rule in _alert_rules()}
    assert alerts == {
        "CareCloudConsumerLagHigh",
        "CareCloudDeadLettersGrowing",
        "CareCloudInternalErrorDeadLetters",
        "CareCloudSnapshotFailed",
        "CareCloudSnapshotHeld",
        "CareCloudSnapshotMissed",
        "CareCloudDeliveryDeadlineAtRisk",
        "CareCloudNoDeliveryFor26Hours",
        "CareCloudNotReady",
        "CareCloudRowsUnderOlderMapping",
        "CareCloudRemapRowsKept",
        "CareCloudSourceSchemaMismatch",
        "CareCloudTransactionsHeldOut",
    }
    assert alerts - firing == set(), "alerts never shown firing"
    assert alerts - quiet == set(), "alerts never shown not firing"
    for rule in _alert_rules():
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert {"summary", "description"} <= set(rule["annotations"])


def test_the_metrics_doc_names_every_metric_and_alert() -> None:
    doc = (ROOT / "docs" / "metrics.md").read_text()
    for family in Metrics().registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"`{name}`" in doc, name
    for rule in _alert_rules():
        assert rule["alert"] in doc, rule["alert"]


# -- settings names ------------------------------------------------------------------------


def _env_names() -> dict[str, str]:
    """Every CARECLOUD_* variable the manifests set, with where it is set."""
    found: dict[str, str] = {}
    for env_file in DEPLOY.glob("k8s/**/config.env"):
        for line in env_file.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                found[line.split("=", 1)[0]] = str(env_file.relative_to(ROOT))
    for doc in yaml.safe_load_all((BASE / "statefulset.yaml").read_text()):
        for container in doc["spec"]["template"]["spec"]["containers"]:
            for env in container.get("env", []):
                found[env["name"]] = "statefulset.yaml"
    return {name: where for name, where in found.items() if name.startswith("CARECLOUD_")}


def _settings_classes() -> dict[str, type[BaseSettings]]:
    classes = [
        cls
        for cls in vars(settings_module).values()
        if isinstance(cls, type) and issubclass(cls, BaseSettings) and cls is not BaseSettings
    ]
    return {str(cls.model_config.get("env_prefix", "")): cls for cls in classes}


def test_every_variable_in_the_manifests_is_a_real_setting() -> None:
    classes = _settings_classes()
    assert PENDING_PREFIXES.isdisjoint(classes), "a pending prefix has a settings class now: reconcile"
    unknown = []
    for name, where in sorted(_env_names().items()):
        prefix = next((p for p in (*classes, *PENDING_PREFIXES) if name.startswith(p)), None)
        if prefix is None:
            unknown.append(f"{name} ({where}): no settings class has its prefix")
        elif prefix in classes and name[len(prefix) :].lower() not in classes[prefix].model_fields:
            unknown.append(f"{name} ({where}): not a field of {classes[prefix].__name__}")
    assert unknown == []


def test_required_settings_are_set_by_the_manifests() -> None:
    names = _env_names()
    for required in ("CARECLOUD_KAFKA_BOOTSTRAP_SERVERS", "CARECLOUD_INGEST_MAPPING_FILE"):
        assert required in names


def test_the_port_and_the_paths_agree_across_image_settings_and_manifests() -> None:
    env = dict(line.split("=", 1) for line in (BASE / "config.env").read_text().splitlines() if "=" in line)
    port = int(env["CARECLOUD_OPS_HTTP_PORT"])
    assert port == OpsSettings.model_fields["http_port"].default
    assert f"EXPOSE {port}" in (ROOT / "Dockerfile").read_text()
    pod = _load(BASE / "statefulset.yaml")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["ports"][0]["containerPort"] == port
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert env["CARECLOUD_INGEST_STATE_DIR"].startswith("/var/lib/carecloud/")
    assert mounts["/var/lib/carecloud"] == "data", "the local store must be on the pod's volume"
    assert env["CARECLOUD_INGEST_MAPPING_FILE"] == "/etc/carecloud/mapping/mapping.yaml"


def test_the_base_mapping_is_the_example_mapping() -> None:
    assert (BASE / "mapping.yaml").read_text() == (ROOT / "examples" / "mapping.yaml").read_text()


# -- the image -------------------------------------------------------------------------------


def test_the_dockerfile_is_slim_debian_pinned_non_root_and_runs_the_cli() -> None:
    text = (ROOT / "Dockerfile").read_text()
    (image,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim-bookworm", image), image
    froms = re.findall(r"^FROM (\S+)(?: AS (\S+))?$", text, re.M)
    # Every stage is the pinned Python image, but for the build stage of the compiled fast
    # path (Rust on the same Debian release), which only hands a wheel over.
    allowed = {("${RUST_IMAGE}", "fastpath")}
    assert all(base == "${PYTHON_IMAGE}" or (base, name) in allowed for base, name in froms)
    assert froms[-1] == ("${PYTHON_IMAGE}", ""), "the runtime stage is the Python image"
    (rust,) = re.findall(r"^ARG RUST_IMAGE=(\S+)$", text, re.M)
    assert re.fullmatch(r"rust:1\.\d+-slim-bookworm", rust), rust
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users, "no USER: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), "a numeric uid lets runAsNonRoot verify it"
    assert int(uid) != 0
    pod = _load(BASE / "statefulset.yaml")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(uid)
    runtime = text[text.rindex("\nFROM ") :]
    assert not re.search(r"apt-get|build-essential|gcc|\bmake\b|cargo|rustc", runtime), "no build tools"
    assert "carecloud-fastpath" in runtime, "the runtime image installs the compiled fast path"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "carecloud-connector" in scripts
    assert 'ENTRYPOINT ["carecloud-connector"]' in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests"} <= set(ignored)


@pytest.mark.parametrize("path", sorted(DEPLOY.rglob("*.yaml")), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_no_file_under_deploy_defines_a_secret(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        if isinstance(doc, dict):
            assert doc.get("kind") != "Secret", "reference Secrets; never define them in the repository"


@pytest.mark.parametrize("overlay", [None, "overlays/example"])
def test_the_manifests_environment_loads_as_valid_settings(
    overlay: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """config.env (+ the overlay's) and the pod's env, with stand-ins for Secrets, pass validation."""
    for name in list(os.environ):
        if name.startswith("CARECLOUD_"):
            monkeypatch.delenv(name)
    files = [BASE / "config.env"] + ([DEPLOY / "k8s" / overlay / "config.env"] if overlay else [])
    for env_file in files:
        for line in env_file.read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                name, value = line.split("=", 1)
                monkeypatch.setenv(name, value)
    (container,) = _load(BASE / "statefulset.yaml")["spec"]["template"]["spec"]["containers"]
    for env in container["env"]:
        source = env["valueFrom"]
        monkeypatch.setenv(
            env["name"], "carecloud-connector-0" if "fieldRef" in source else "stand-in-secret"
        )
    loaded = settings_module.load_settings()
    assert loaded.ops.http_port == 8080
    assert loaded.ingest.transactional_id == "carecloud-connector-0"
    assert loaded.kafka.client_config()["security.protocol"] == "SASL_SSL"
    assert loaded.snapshot.enabled


def test_a_scrape_of_the_health_server_has_every_series_the_alerts_and_dashboard_use() -> None:
    """Served over real HTTP after one call of each helper, the way a running connector exports."""
    import datetime as dt
    import urllib.request

    from connector.ops.health import HealthServer, Heartbeat

    m = Metrics()
    m.set_lag("db.public.claim", 0, 10)
    m.set_state_entities("Claim", 3)
    m.set_older_mapping_rows("Claim", 0)
    m.set_schema_mismatch("public.claim", "paid", "dropped", False)
    m.restore_progress(0, 5, 0)
    m.delivery_succeeded("Claim", dt.datetime.now(dt.UTC))
    m.set_deadline_slack(3600)
    with HealthServer(m, lambda: None, Heartbeat(), host="127.0.0.1", port=0) as server:
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            scraped = {line.split("{")[0].split(" ")[0] for line in resp.read().decode().splitlines()}
    used = {n for rule in _alert_rules() for n in _metric_names(rule["expr"])}
    used |= {n for _, expr in _dashboard_exprs() for n in _metric_names(expr)}
    assert used - scraped == set()


def test_the_image_build_copies_everything_the_wheel_is_built_from() -> None:
    """pyproject's packages, force-includes and readme must all be in the build stage's COPYs."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wheel = project["tool"]["hatch"]["build"]["targets"]["wheel"]
    needed = {"pyproject.toml", project["project"]["readme"], *wheel["packages"]}
    needed |= {source.split("/")[0] for source in wheel.get("force-include", {})}
    copied: set[str] = set()
    for line in re.findall(r"^COPY (?!--from)(.+)$", (ROOT / "Dockerfile").read_text(), re.M):
        copied.update(line.split()[:-1])
    assert needed - copied == set()
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert needed & ignored == set()
