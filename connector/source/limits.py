"""What one message may cost: nesting and length bounds checked before the expensive work.

A crafted message must end as a dead letter within milliseconds, never as an exception that
stops the ingest or a conversion that runs for minutes (issue 16). The bounds are set far
above anything a real source sends, so no legitimate event meets them:

- **nesting**: a Debezium payload is three levels deep (envelope, row, a struct value such as
  ``VariableScaleDecimal``) and a Connect schema a few more; 64 matches the compiled path's
  own limit (``fastpath/src/json.rs``), which declines deeper documents to this one. Deeper
  nesting breaks libraries in ways that are not bad-input errors (``orjson.dumps`` raises
  ``TypeError`` at 255 levels, comparisons raise ``RecursionError`` near 1000).
- **decimal length**: converting a big unscaled integer to ``Decimal`` is quadratic in its
  digits (a 150 KB base64 value took 4 s); 128 bytes hold 308 digits, beyond any column a
  CareCloud entity can hold (the mapper then checks the field's own precision).

Counting brackets is a C-speed scan of the bytes; only a document with more brackets than the
limit (a schema-wrapped message, or an attack) is walked to measure its real depth.
"""

from __future__ import annotations

from typing import Any, Final

from connector.source.exceptions import DecodeError

__all__ = [
    "MAX_DECIMAL_BYTES",
    "MAX_NESTING",
    "check_nesting",
    "nesting_exceeds",
]

MAX_NESTING: Final = 64
"""Deepest nesting of objects and arrays accepted in any parsed document (value, key, header,
schema, JSON text column)."""
MAX_DECIMAL_BYTES: Final = 128
"""Longest unscaled decimal accepted from the source (bytes; 308 decimal digits)."""


def nesting_exceeds(doc: Any, limit: int = MAX_NESTING) -> bool:
    """Whether ``doc`` nests objects and arrays deeper than ``limit``; iterative, linear.

    The outermost container is level 1, and a container counts only if it holds something:
    exactly where the compiled path's parser declines (a value below level ``limit``), so
    the two paths agree on every document, empty containers at the edge included.
    """
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if depth > limit and node:
            return True
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def check_nesting(doc: Any, brackets: int, where: str) -> None:
    """Refuse ``doc`` (parsed from text holding ``brackets`` opening brackets) if too deep.

    ``brackets`` bounds the depth from above, so the walk runs only when it could matter.
    """
    if brackets > MAX_NESTING and isinstance(doc, dict | list) and nesting_exceeds(doc):
        raise DecodeError(f"{where} is nested deeper than {MAX_NESTING} levels", reason="nesting_too_deep")
