"""The benches' plain-text tables: a left-aligned name, then right-aligned cells."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["table_row"]


def table_row(cells: Sequence[str], columns: Sequence[tuple[str, int]]) -> str:
    """One line of a table: each cell padded to its column's ``(title, width)``."""
    first, *rest = zip(cells, columns, strict=True)
    text = f"  {first[0]:<{first[1][1]}}"
    return text + "".join(f" {cell:>{width}}" for cell, (_, width) in rest)
