"""One version source: pyproject.toml's [project] version, read back by the package, the CLI
and the User-Agent from the installed metadata; the deployment's default image tag follows it."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml

import connector
from connector.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _pyproject_version() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project.get("dynamic", []), "the version is written in [project], once"
    return str(project["version"])


def test_the_package_reads_its_version_from_pyproject() -> None:
    # After changing pyproject's version, `make venv` reinstalls the package and its metadata.
    assert connector.__version__ == _pyproject_version()


def test_the_cli_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"carecloud-connector {_pyproject_version()}"


def test_no_module_writes_a_version_of_its_own() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "connector").rglob("*.py")
        if "__version__ =" in path.read_text() and path != ROOT / "connector" / "__init__.py"
    ]
    assert offenders == []


def test_the_deployments_image_tag_is_the_version() -> None:
    kustomization = yaml.safe_load((ROOT / "deploy" / "k8s" / "base" / "kustomization.yaml").read_text())
    [image] = [i for i in kustomization["images"] if i["name"] == "carecloud-connector"]
    assert str(image["newTag"]) == _pyproject_version()
