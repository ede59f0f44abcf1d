"""YAML loading that remembers where each key was, so mapping errors can name the line."""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["Located", "load_located"]


class Located(dict[str, Any]):
    """A YAML mapping that also knows the 1-based line of itself and of each key."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.line = 0
        self.key_lines: dict[str, int] = {}


class _Loader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        value = Located(super().construct_mapping(node, deep=True))
        value.line = node.start_mark.line + 1
        value.key_lines = {str(key_node.value): key_node.start_mark.line + 1 for key_node, _ in node.value}
        return value


_Loader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    lambda loader, node: loader.construct_mapping(node),  # type: ignore[arg-type]
)


def load_located(text: str) -> Any:
    """Parse YAML text; every mapping in the result is a ``Located``."""
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects
