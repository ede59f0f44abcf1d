"""The configuration reference in README.md, generated from the settings classes themselves.

    python -m connector.config.reference    # prints the Markdown tables

Every setting's environment variable, default and meaning come from ``settings.py`` (the
docstring under each field), so the README cannot drift from the code: a unit test compares
the README's section with this output.
"""

from __future__ import annotations

import ast
import functools
import inspect
import itertools
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from pydantic_core import PydanticUndefined

from connector.config import settings as settings_module

__all__ = ["BEGIN", "END", "reference"]

BEGIN = "<!-- settings-reference:begin (python -m connector.config.reference) -->"
END = "<!-- settings-reference:end -->"


def reference() -> str:
    """One Markdown table per settings class, in ``load_settings`` order."""
    parts = []
    for _, cls in settings_module._MODELS:  # noqa: SLF001 - the loader's own order
        docs = _field_docs(Path(inspect.getfile(cls)))  # each class's own module
        prefix = str(cls.model_config.get("env_prefix", ""))
        parts.append(f"**{cls.__name__}** — {(cls.__doc__ or '').strip().splitlines()[0]}\n")
        parts.append("| variable | default | meaning |")
        parts.append("|---|---|---|")
        for name, field in cls.model_fields.items():
            default = _default(field.default, field.default_factory, field.is_required())
            text = " ".join(docs.get((cls.__name__, name), "").split()).replace("|", "\\|")
            parts.append(f"| `{prefix}{name.upper()}` | {default} | {text} |")
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def _default(value: Any, factory: Any, required: bool) -> str:
    if required:
        return "**required**"
    if factory is not None:
        try:
            source = inspect.getsource(factory)
        except (OSError, TypeError):
            source = ""
        return "(the host name; the pod name)" if "gethostname" in source else "(computed)"
    if value is None or value is PydanticUndefined:
        return "unset"
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, Path):
        return f"`{value}`"
    return f"`{value}`"


@functools.cache
def _field_docs(path: Path) -> dict[tuple[str, str], str]:
    """(class, field) -> the string literal right under the field's annotation."""
    docs: dict[tuple[str, str], str] = {}
    for node in ast.parse(path.read_text()).body:
        if not isinstance(node, ast.ClassDef):
            continue
        body = node.body
        for current, following in itertools.pairwise(body):
            if (
                isinstance(current, ast.AnnAssign)
                and isinstance(current.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[(node.name, current.target.id)] = following.value.value
    return docs


if __name__ == "__main__":
    print(reference(), end="")
