"""Plain-text tables for the CLI's human output (``--json`` gives scripts the same data)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["table"]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned text, right-aligned numbers, a rule under the header."""
    cells = [
        [
            (
                ""
                if cell is None
                else f"{cell:,}"
                if isinstance(cell, int) and not isinstance(cell, bool)
                else str(cell)
            )
            for cell in row
        ]
        for row in rows
    ]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    numeric = [
        all(isinstance(row[i], int) and not isinstance(row[i], bool) for row in rows if row[i] is not None)
        and bool(rows)
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    return "\n".join([line(list(headers)), line(["-" * w for w in widths]), *(line(r) for r in cells)])
