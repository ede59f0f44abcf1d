"""JSON schemas for the Prometheus Operator kinds the manifests use (PrometheusRule, ServiceMonitor).

``kubernetes-validate`` bundles only Kubernetes' own kinds. These are written here from the
operator's API reference (monitoring.coreos.com/v1), covering the fields a ServiceMonitor or
PrometheusRule may carry that this project could plausibly use, closed against unknown
fields so a misspelling fails. ``metadata`` and label selectors are checked against the real
Kubernetes schemas from ``kubernetes-validate``.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import jsonschema
import kubernetes_validate
from referencing import Registry, Resource

__all__ = ["validate_crd"]

_DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
_RELABEL = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "sourceLabels": {"type": "array", "items": {"type": "string"}},
        "separator": {"type": "string"},
        "targetLabel": {"type": "string"},
        "regex": {"type": "string"},
        "modulus": {"type": "integer"},
        "replacement": {"type": "string"},
        "action": {"type": "string"},
    },
}
_ENDPOINT = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "port": {"type": "string"},
        "targetPort": {"type": ["string", "integer"]},
        "path": {"type": "string"},
        "scheme": {"enum": ["http", "https"]},
        "interval": _DURATION,
        "scrapeTimeout": _DURATION,
        "honorLabels": {"type": "boolean"},
        "honorTimestamps": {"type": "boolean"},
        "params": {"type": "object"},
        "relabelings": {"type": "array", "items": _RELABEL},
        "metricRelabelings": {"type": "array", "items": _RELABEL},
        "tlsConfig": {"type": "object"},
        "bearerTokenSecret": {"type": "object"},
        "authorization": {"type": "object"},
    },
}
_RULE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["expr"],
    "properties": {
        "alert": {"type": "string"},
        "record": {"type": "string"},
        "expr": {"type": ["string", "integer"]},
        "for": _DURATION,
        "keep_firing_for": _DURATION,
        "labels": _STRINGS,
        "annotations": _STRINGS,
    },
    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
}
_SPECS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": {
        "type": "object",
        "additionalProperties": False,
        "required": ["selector", "endpoints"],
        "properties": {
            "selector": {"$ref": "labelselector"},
            "namespaceSelector": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"any": {"type": "boolean"}, "matchNames": {"type": "array"}},
            },
            "endpoints": {"type": "array", "minItems": 1, "items": _ENDPOINT},
            "jobLabel": {"type": "string"},
            "targetLabels": {"type": "array", "items": {"type": "string"}},
            "podTargetLabels": {"type": "array", "items": {"type": "string"}},
            "sampleLimit": {"type": "integer"},
        },
    },
    "PrometheusRule": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "groups": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "minLength": 1},
                        "interval": _DURATION,
                        "limit": {"type": "integer"},
                        "query_offset": _DURATION,
                        "rules": {"type": "array", "items": _RULE},
                    },
                },
            }
        },
    },
}


def _k8s_schema(name: str, version: str) -> Any:
    """One of kubernetes-validate's bundled (strict) schemas, e.g. ``objectmeta-meta-v1``."""
    root = resources.files(kubernetes_validate) / "kubernetes-json-schema"
    candidates = sorted(
        (p for p in root.iterdir() if p.name.endswith("-local-strict") and p.name[1:].startswith(version)),
        key=lambda p: p.name,
    )
    return json.loads((candidates[-1] / f"{name}.json").read_text())


def _registry(version: str) -> Registry[Any]:
    """Resolves the bundled schemas' references into their shared ``_definitions.json``."""
    return Resource.from_contents(_k8s_schema("_definitions", version)) @ Registry()


def validate_crd(obj: dict[str, Any], version: str) -> None:
    """Raise ``kubernetes_validate.ValidationError`` if ``obj`` does not fit its kind's schema."""
    kind = obj.get("kind", "")
    if obj.get("apiVersion") != "monitoring.coreos.com/v1" or kind not in _SPECS:
        raise kubernetes_validate.SchemaNotFoundError(kind, version, str(obj.get("apiVersion")))
    selector = _k8s_schema("labelselector-meta-v1", version)
    spec_schema = json.loads(
        json.dumps(_SPECS[kind]).replace('{"$ref": "labelselector"}', json.dumps(selector))
    )
    schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": kind},
            "metadata": _k8s_schema("objectmeta-meta-v1", version),
            "spec": spec_schema,
        },
    }
    try:
        jsonschema.Draft202012Validator(schema, registry=_registry(version)).validate(obj)
    except jsonschema.ValidationError as exc:
        raise kubernetes_validate.ValidationError(exc, version) from None
