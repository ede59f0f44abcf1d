"""The seven schemas load, are documented, and answer the loader's questions consistently."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import fastavro
import pytest

import connector.model as model
from connector.errors import ConfigError
from connector.model import schemas
from connector.model.schemas import (
    ENTITY_NAMES,
    ENTITY_NAMESPACE,
    ENVELOPE_NAME,
    REFERENCES,
    SCHEMA_NAMES,
    Reference,
    field_names,
    fingerprint,
    raw_schema,
    schema,
)

REPO_SCHEMAS = Path(__file__).resolve().parents[3] / "schemas" / "avro"

EXPECTED_REFERENCES = {
    "Family": (),
    "Provider": (),
    "FamilyMember": (Reference("FamilyId", "Family"),),
    "Care": (Reference("FamilyMemberId", "FamilyMember"), Reference("ProviderId", "Provider")),
    "Claim": (Reference("CareId", "Care"), Reference("ProviderId", "Provider")),
    "EOP": (Reference("ClaimId", "Claim"),),
}


def _named_types(node: Any) -> list[dict[str, Any]]:
    """Every record and enum definition inside a raw schema."""
    found = []
    if isinstance(node, dict):
        if node.get("type") in ("record", "enum"):
            found.append(node)
        for key in ("type", "fields", "items", "values"):
            found += _named_types(node.get(key))
    elif isinstance(node, list):
        for item in node:
            found += _named_types(item)
    return found


def test_exports_are_what_was_meant() -> None:
    assert sorted(model.__all__) == [
        "ENTITY_NAMES",
        "ENVELOPE_NAME",
        "REFERENCES",
        "Reference",
        "SCHEMA_NAMES",
        "UnknownSchemaError",
        "decode",
        "encode",
        "field_names",
        "fingerprint",
        "raw_schema",
        "schema",
        "validate",
    ]
    for name in model.__all__:
        assert hasattr(model, name)


def test_names_are_parents_first() -> None:
    assert ENTITY_NAMES == ("Family", "Provider", "FamilyMember", "Care", "Claim", "EOP")
    assert ENVELOPE_NAME == "ChangeEnvelope"
    position = {name: i for i, name in enumerate(ENTITY_NAMES)}
    for child, references in REFERENCES.items():
        for reference in references:
            assert position[reference.parent] < position[child]


def test_one_file_per_schema_and_no_others() -> None:
    assert sorted(p.stem for p in REPO_SCHEMAS.glob("*.avsc")) == sorted(SCHEMA_NAMES)


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_schema_is_parsed_once_and_named_in_its_namespace(name: str) -> None:
    parsed = schema(name)
    assert parsed is schema(name)
    namespace = "com.carecloud.cdc" if name == ENVELOPE_NAME else ENTITY_NAMESPACE
    assert parsed["name"] == f"{namespace}.{name}"
    assert raw_schema(name) == json.loads((REPO_SCHEMAS / f"{name}.avsc").read_text())


def test_raw_schema_is_a_copy() -> None:
    raw_schema("Family")["fields"].clear()
    assert raw_schema("Family")["fields"]


@pytest.mark.parametrize("name", ENTITY_NAMES)
def test_entity_shape(name: str) -> None:
    fields = raw_schema(name)["fields"]
    assert (fields[0]["name"], fields[0]["type"]) == ("EntityId", "string")
    updated = next(f for f in fields if f["name"] == "UpdatedAt")
    assert updated["type"] == {"type": "long", "logicalType": "timestamp-millis"}
    assert 6 <= len(fields) <= 12
    for field in fields:
        if isinstance(field["type"], list):  # every union is an optional field
            assert field["type"][0] == "null"
            assert field.get("default", "absent") is None


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_every_record_enum_and_field_has_a_doc(name: str) -> None:
    raw = raw_schema(name)
    for named in _named_types(raw):
        assert named.get("doc", "").strip(), named["name"]
        for field in named.get("fields", []):
            assert field.get("doc", "").strip(), f"{named['name']}.{field['name']}"


def test_named_types_are_unique_across_the_entity_files() -> None:
    names = [t["name"] for entity in ENTITY_NAMES for t in _named_types(raw_schema(entity))]
    assert len(names) == len(set(names))


def test_envelope_references_the_entities_by_full_name() -> None:
    payload = next(f for f in raw_schema(ENVELOPE_NAME)["fields"] if f["name"] == "Payload")
    order = (
        "Family",
        "FamilyMember",
        "Provider",
        "Care",
        "Claim",
        "EOP",
    )  # branch indexes are encoded: never reorder
    assert payload["type"] == ["null", *(f"{ENTITY_NAMESPACE}.{n}" for n in order)]
    assert payload["default"] is None


def test_references_match_the_associations() -> None:
    assert REFERENCES == EXPECTED_REFERENCES
    assert model.REFERENCES is REFERENCES


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_field_names_follow_the_file(name: str) -> None:
    document = json.loads((REPO_SCHEMAS / f"{name}.avsc").read_text())
    assert field_names(name) == tuple(f["name"] for f in document["fields"])


def test_fingerprints_are_stable_distinct_sha256() -> None:
    prints = {name: fingerprint(name) for name in SCHEMA_NAMES}
    for name, value in prints.items():
        assert re.fullmatch(r"[0-9a-f]{64}", value), name
    assert len(set(prints.values())) == len(SCHEMA_NAMES)
    for name in ENTITY_NAMES:
        canonical = fastavro.schema.to_parsing_canonical_form(raw_schema(name))
        assert prints[name] == fastavro.schema.fingerprint(canonical, "SHA-256")


def test_fingerprint_ignores_docs_but_not_types(tmp_path: Path) -> None:
    shutil.copytree(REPO_SCHEMAS, tmp_path, dirs_exist_ok=True)
    family = json.loads((tmp_path / "Family.avsc").read_text())
    family["fields"][1]["doc"] = "Reworded."
    (tmp_path / "Family.avsc").write_text(json.dumps(family))
    assert schemas._load(tmp_path).fingerprints["Family"] == fingerprint("Family")
    family["fields"][1]["type"] = ["null", "string"]
    family["fields"][1]["default"] = None
    (tmp_path / "Family.avsc").write_text(json.dumps(family))
    reloaded = schemas._load(tmp_path).fingerprints
    assert reloaded["Family"] != fingerprint("Family")
    assert reloaded[ENVELOPE_NAME] != fingerprint(ENVELOPE_NAME)  # the envelope inlines Family


@pytest.mark.parametrize("lookup", [schema, raw_schema, fingerprint, field_names])
def test_unknown_name_is_a_config_error_and_a_key_error(lookup: Any) -> None:
    with pytest.raises(ConfigError, match="'Patient'") as caught:
        lookup("Patient")
    assert isinstance(caught.value, KeyError)
    assert str(caught.value).startswith("unknown schema 'Patient'")


def test_schema_dir_env_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CARECLOUD_SCHEMA_DIR", str(tmp_path))
    assert schemas._schema_dir() == tmp_path
    monkeypatch.setenv("CARECLOUD_SCHEMA_DIR", str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match="CARECLOUD_SCHEMA_DIR"):
        schemas._schema_dir()


def test_schema_dir_prefers_the_package_then_the_checkout(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CARECLOUD_SCHEMA_DIR", raising=False)
    package, checkout = tmp_path / "package", tmp_path / "checkout"
    monkeypatch.setattr(schemas, "_PACKAGE_DIR", package)
    monkeypatch.setattr(schemas, "_CHECKOUT_DIR", checkout)
    with pytest.raises(ConfigError, match="no schema directory"):
        schemas._schema_dir()
    checkout.mkdir()
    assert schemas._schema_dir() == checkout
    package.mkdir()
    assert schemas._schema_dir() == package


def _broken_copy(tmp_path: Path, name: str, change: Any) -> Path:
    shutil.copytree(REPO_SCHEMAS, tmp_path, dirs_exist_ok=True)
    path = tmp_path / f"{name}.avsc"
    path.write_text(change(path.read_text()))
    return tmp_path


@pytest.mark.parametrize(
    ("name", "change", "message"),
    [
        ("Care", lambda text: "{", "not JSON"),
        ("Care", lambda text: text.replace('"name": "Care"', '"name": "Visit"'), "must hold the record"),
        (
            "Care",
            lambda text: text.replace('"references": "Provider"', '"references": "Doctor"'),
            "ProviderId",
        ),
        ("Claim", lambda text: text.replace('"name": "EntityId"', '"name": "ClaimKey"'), "primary key"),
        ("EOP", lambda text: text.replace('"UNKNOWN", "ISSUED"', '"UNKNOWN", "UNKNOWN"'), "not a valid Avro"),
        ("ChangeEnvelope", lambda text: text.replace('"com.carecloud.entities.EOP"', '"string"'), "Payload"),
    ],
)
def test_a_broken_schema_file_is_a_config_error(tmp_path: Path, name: str, change: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        schemas._load(_broken_copy(tmp_path, name, change))


def test_a_missing_schema_file_is_a_config_error(tmp_path: Path) -> None:
    shutil.copytree(REPO_SCHEMAS, tmp_path, dirs_exist_ok=True)
    (tmp_path / "Claim.avsc").unlink()
    with pytest.raises(ConfigError, match=r"Claim\.avsc cannot be read"):
        schemas._load(tmp_path)


def _type_name(avro_type: Any) -> str:
    if isinstance(avro_type, list):
        return " or ".join(_type_name(branch) for branch in avro_type if branch != "null")
    if isinstance(avro_type, str):
        return avro_type.rsplit(".", 1)[-1]
    if avro_type.get("logicalType") == "decimal":
        return f"decimal({avro_type['precision']},{avro_type['scale']})"
    if "logicalType" in avro_type:
        return str(avro_type["logicalType"])
    if avro_type["type"] == "enum":
        return f"enum {avro_type['name']}"
    return str(avro_type["type"])


def _reference_section(name: str) -> str:
    """The section of docs/schemas.md for one schema, generated from its .avsc."""
    raw = raw_schema(name)
    lines = [f"## {name}", "", raw["doc"], "", "| Field | Type | Required | References | Description |"]
    lines.append("|---|---|---|---|---|")
    for field in raw["fields"]:
        required = "yes" if "default" not in field else "no"
        parent = field.get("references", "")
        lines.append(
            f"| `{field['name']}` | {_type_name(field['type'])} | {required} | {parent} | {field['doc']} |"
        )
    for enum in (t for t in _named_types(raw) if t["type"] == "enum"):
        symbols = ", ".join(
            f"`{s}` (default)" if s == enum.get("default") else f"`{s}`" for s in enum["symbols"]
        )
        lines += ["", f"**{enum['name']}**: {symbols}. {enum['doc']}"]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_field_reference_is_current(name: str) -> None:
    """docs/schemas.md holds the generated section verbatim; on failure, paste the expected one."""
    reference = (REPO_SCHEMAS.parents[1] / "docs" / "schemas.md").read_text()
    expected = _reference_section(name)
    assert expected in reference, f"docs/schemas.md is stale; the {name} section should read:\n\n{expected}"
