"""README.md stays true: its two commands exist and its configuration reference matches the code."""

from __future__ import annotations

import re
from pathlib import Path

from connector.config.reference import BEGIN, END, reference

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_the_configuration_reference_is_generated_from_the_settings() -> None:
    section = README.split(BEGIN, 1)[1].split(END, 1)[0]
    assert section.strip() == reference().strip(), "run: python -m connector.config.reference"


def test_every_setting_variable_is_documented() -> None:
    for variable in re.findall(r"CARECLOUD_[A-Z0-9_]+", reference()):
        assert f"`{variable}`" in README


def test_the_top_shows_make_demo_and_make_test_and_ci_runs_make_test() -> None:
    first_block = README.split("```bash", 1)[1].split("```", 1)[0]
    assert [line.split()[1] for line in first_block.splitlines() if line.startswith("make ")] == [
        "demo",
        "test",
    ]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M)
    assert re.search(r"^test:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()
