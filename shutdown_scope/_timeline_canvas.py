"""The drawing surface of the SVG timeline and the fitting of its texts.

Pixel layout (the plot's left edge and width, which programs reading the
drawing rely on), the SVG element collector, and the helpers that turn the
report's strings and times into short, printable text.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from typing import Final

from ._labels import printable_label

__all__ = [
    "CHAR",
    "FONT",
    "LABEL_WIDTH",
    "LEFT",
    "PLOT",
    "RIGHT",
    "TITLE_LABELS",
    "WIDTH",
    "Canvas",
    "counted_labels",
    "duration_text",
    "fit_text",
    "nice_step",
    "shown_text",
]

WIDTH: Final = 960
LEFT: Final = 200  # the column of row names
RIGHT: Final = WIDTH - 40
PLOT: Final = RIGHT - LEFT
FONT: Final = 12
CHAR: Final = 0.6 * FONT  # the advance of an average sans-serif character
TITLE_LABELS: Final = 20  # distinct labels listed in one tooltip
LABEL_WIDTH: Final = 600  # px: one label in a tooltip


def shown_text(value: str) -> str:
    """Text from the report on one line, non-printables escaped, cut at 200
    characters. Applied once to each raw string (twice would double its
    backslashes); ``escape`` then makes the result safe for XML."""
    return printable_label(value)


def fit_text(text: str, width: float) -> str:
    """``text`` cut to about ``width`` pixels, with an ellipsis if cut."""
    room = max(1, int(width / CHAR))
    return text if len(text) <= room else text[: room - 1] + "…"


def duration_text(seconds: float, *, sign: str = "") -> str:
    if seconds >= 1:
        return f"{sign}{seconds:.3g} s"
    return f"{sign}{seconds * 1000:.3g} ms"


def counted_labels(labels: Iterable[str], width: float = LABEL_WIDTH) -> str:
    """``GET /a x3, GET /b`` from raw labels, each cut to ``width`` pixels; at
    most TITLE_LABELS distinct ones."""
    counts = sorted(Counter(labels).items())
    if not counts:
        return "nothing"
    shown = [
        fit_text(shown_text(label), width) + ("" if n == 1 else f" x{n}")
        for label, n in counts[:TITLE_LABELS]
    ]
    if len(counts) > TITLE_LABELS:
        shown.append(f"and {len(counts) - TITLE_LABELS} more")
    return ", ".join(shown)


def nice_step(span: float) -> float:
    """A 1, 2 or 5 times a power of ten giving about six ticks over ``span``."""
    raw = span / 6
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


class Canvas:
    """Collects SVG elements; every string passed in is already escaped."""

    def __init__(self, axis_end: float) -> None:
        self.axis_end = axis_end
        self.parts: list[str] = []

    def x(self, seconds: float) -> float:
        return LEFT + PLOT * min(seconds, self.axis_end) / self.axis_end

    def add(self, element: str) -> None:
        self.parts.append(element)

    def text(
        self, x: float, y: float, content: str, *, cls: str, anchor: str = "start"
    ) -> None:
        self.add(
            f'<text class="{cls}" x="{x:.2f}" y="{y:.2f}"'
            f' text-anchor="{anchor}">{content}</text>'
        )
