"""The Kubernetes manifests and alert rules, checked with the real tools, offline.

``kubectl kustomize`` (Debian's kubectl) renders the base and the example overlay; every object
is validated against the Kubernetes JSON schemas bundled in the ``kubernetes-validate`` package
(strict: an unknown field is an error) and, for the Prometheus Operator's kinds, against the
subset schemas in ``deploy_schemas``. ``promtool`` (Debian's prometheus package) checks the
rules and runs their unit tests. ``make system-deps`` installs both tools.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.integration.deploy_schemas import validate_crd

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.32"
"""The oldest Kubernetes the manifests target (persistentVolumeClaimRetentionPolicy is GA)."""
RESTRICTED_VOLUMES = set(
    "configMap csi downwardAPI emptyDir ephemeral persistentVolumeClaim projected secret".split()  # noqa: SIM905
)
"""The volume types the "restricted" Pod Security Standard allows."""
SECRET_LIKE = re.compile(r"PASSWORD|SECRET|API_KEY|TOKEN|PRIVATE_KEY|ACCESS_KEY", re.I)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run `make system-deps` (Debian packages kubectl, prometheus)")
    return path


def _render(target: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [_tool("kubectl"), "kustomize", str(K8S / target)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module", params=["base", "overlays/example"])
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return _render(request.param)


def _of_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def _pod_specs(objs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in objs:
        if obj["kind"] in ("StatefulSet", "Deployment", "DaemonSet", "Job"):
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]


def _containers(pod: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from pod.get(key, [])


def test_renders_the_expected_objects(rendered: list[dict[str, Any]]) -> None:
    kinds = sorted(o["kind"] for o in rendered)
    for kind in (
        "ConfigMap", "NetworkPolicy", "PodDisruptionBudget", "PrometheusRule", "Service", "ServiceAccount",
        "ServiceMonitor", "StatefulSet",
    ):  # fmt: skip
        assert kind in kinds
    assert kinds.count("Service") == 2
    (headless,) = [s for s in _of_kind(rendered, "Service") if s["spec"].get("clusterIP") == "None"]
    (sts,) = _of_kind(rendered, "StatefulSet")
    assert sts["spec"]["serviceName"] == headless["metadata"]["name"]


def test_every_object_validates_against_its_schema_offline(rendered: list[dict[str, Any]]) -> None:
    for obj in rendered:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            validate_crd(obj, KUBERNETES_VERSION)
        else:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_the_validators_do_reject_a_broken_object() -> None:
    """The schema checks are not vacuous: a misspelt field fails each of them."""
    sts = _of_kind(_render("base"), "StatefulSet")[0]
    sts["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, KUBERNETES_VERSION, strict=True)
    for kind in ("ServiceMonitor", "PrometheusRule"):
        obj = _of_kind(_render("base"), kind)[0]
        obj["spec"]["endpoint" if kind == "ServiceMonitor" else "group"] = []
        with pytest.raises(kubernetes_validate.ValidationError):
            validate_crd(obj, KUBERNETES_VERSION)


def test_every_container_meets_the_restricted_pod_security_standard(rendered: list[dict[str, Any]]) -> None:
    specs = list(_pod_specs(rendered))
    assert specs
    for name, pod in specs:
        pod_sc = pod.get("securityContext", {})
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            assert not pod.get(host), (name, host)
        assert pod_sc.get("runAsNonRoot") is True
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
        for volume in pod.get("volumes", []):
            assert set(volume) - {"name"} <= RESTRICTED_VOLUMES, volume
        for c in _containers(pod):
            sc = c.get("securityContext", {})
            where = (name, c["name"])
            assert sc.get("runAsNonRoot") is True, where
            assert sc.get("runAsUser", pod_sc.get("runAsUser")) not in (None, 0), where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("privileged", False) is False, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert set(sc.get("capabilities", {}).get("add", [])) <= {"NET_BIND_SERVICE"}, where
            assert sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts, "a read-only root filesystem needs a writable /tmp"
            assert not c.get("ports") or all("hostPort" not in p for p in c["ports"]), where


def test_probes_resources_and_grace_period(rendered: list[dict[str, Any]]) -> None:
    (sts,) = _of_kind(rendered, "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind]), kind
    assert 60 <= pod["terminationGracePeriodSeconds"] <= 300
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] in {m["name"] for m in c["volumeMounts"]}
    names = {e["name"]: e for e in c["env"]}
    assert names["CARECLOUD_INGEST_TRANSACTIONAL_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_secrets_are_only_referenced_never_written(rendered: list[dict[str, Any]]) -> None:
    assert _of_kind(rendered, "Secret") == []
    for name, pod in _pod_specs(rendered):
        for c in _containers(pod):
            for env in c.get("env", []):
                if SECRET_LIKE.search(env["name"]):
                    assert "value" not in env, (name, env["name"])
                    assert "secretKeyRef" in env["valueFrom"], (name, env["name"])
    for cm in _of_kind(rendered, "ConfigMap"):
        for key, value in cm.get("data", {}).items():
            if key.endswith(".env") or key.startswith("CARECLOUD_"):
                assert not SECRET_LIKE.search(key), (cm["metadata"]["name"], key)
            assert "PRIVATE KEY-----" not in value, (cm["metadata"]["name"], key)


def test_services_and_monitor_select_the_pods(rendered: list[dict[str, Any]]) -> None:
    (sts,) = _of_kind(rendered, "StatefulSet")
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    port_names = {p["name"] for p in sts["spec"]["template"]["spec"]["containers"][0]["ports"]}
    services = _of_kind(rendered, "Service")
    for svc in services:
        assert svc["spec"]["selector"].items() <= pod_labels.items(), svc["metadata"]["name"]
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= port_names
    (monitor,) = _of_kind(rendered, "ServiceMonitor")
    wanted = monitor["spec"]["selector"]["matchLabels"]
    (scraped,) = [s for s in services if wanted.items() <= s["metadata"]["labels"].items()]
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in scraped["spec"]["ports"]}
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    (pdb,) = _of_kind(rendered, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_egress_goes_only_to_dns_kafka_storage_and_the_portal(rendered: list[dict[str, Any]]) -> None:
    (policy,) = _of_kind(rendered, "NetworkPolicy")
    spec = policy["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    (sts,) = _of_kind(rendered, "StatefulSet")
    assert spec["podSelector"]["matchLabels"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    ports = set()
    for rule in spec["egress"]:
        assert rule.get("to"), "an egress rule without destinations allows everywhere"
        assert rule.get("ports"), "an egress rule without ports allows every port"
        for peer in rule["to"]:
            cidr = peer.get("ipBlock", {}).get("cidr")
            assert cidr not in ("0.0.0.0/0", "::/0"), "egress to the whole internet"
        ports |= {(p["port"], p.get("protocol", "TCP")) for p in rule["ports"]}
    assert ports == {(53, "UDP"), (53, "TCP"), (9093, "TCP"), (443, "TCP"), (22, "TCP")}


def test_the_example_overlay_enforces_restricted_and_replaces_the_placeholders() -> None:
    objs = _render("overlays/example")
    (ns,) = _of_kind(objs, "Namespace")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert all(o["metadata"].get("namespace") == "carecloud" for o in objs if o["kind"] != "Namespace")
    (policy,) = _of_kind(objs, "NetworkPolicy")
    cidrs = [p["ipBlock"]["cidr"] for r in policy["spec"]["egress"] for p in r["to"] if "ipBlock" in p]
    assert "192.0.2.0/24" not in cidrs, "the base's documentation range for Kafka was not replaced"


# -- promtool --------------------------------------------------------------------------------


def test_promtool_checks_the_rules() -> None:
    out = subprocess.run(
        [_tool("promtool"), "check", "rules", "alerts.yaml"],
        cwd=ROOT / "deploy" / "prometheus",
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yaml").read_text())
    count = sum(len(group["rules"]) for group in rules["groups"])
    assert count >= 8  # the file's own alerts, each checked (no group silently dropped)
    assert f"SUCCESS: {count} rules found" in out.stdout


def test_promtool_runs_the_alert_unit_tests() -> None:
    out = subprocess.run(
        [_tool("promtool"), "test", "rules", "alerts_test.yaml"],
        cwd=ROOT / "deploy" / "prometheus",
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout
