"""``--metrics-file``: the launcher's reloads, as a file for Prometheus.

The launcher is a plain synchronous process that imports no metrics library:
it writes the Prometheus text format itself, atomically, on start and at the end
of each reload, for node_exporter's textfile collector (name the file
``*.prom`` in its directory) or anything else that reads such a file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Final, Literal

__all__ = ["MetricsFile", "ReloadOutcome"]

ReloadOutcome = Literal["done", "failed", "interrupted"]
_OUTCOMES: Final[tuple[ReloadOutcome, ...]] = ("done", "failed", "interrupted")
_PREFIX: Final = "shutdown_scope_launcher"


class MetricsFile:
    """Counts reloads by outcome and rewrites ``path`` after each."""

    def __init__(self, path: str) -> None:
        self.path = Path(path).absolute()
        self.reloads: dict[ReloadOutcome, int] = dict.fromkeys(_OUTCOMES, 0)
        self.generation = 1  # the launcher starts generation 1 first

    def text(self) -> str:
        """The metrics in the Prometheus text exposition format."""
        lines = [
            (
                f"# HELP {_PREFIX}_reloads_total Reloads by outcome: done (the new"
                " generation took over), failed (the old one keeps serving),"
                " interrupted (the launcher stopped during it)."
            ),
            f"# TYPE {_PREFIX}_reloads_total counter",
            *(
                f'{_PREFIX}_reloads_total{{outcome="{outcome}"}} {count}'
                for outcome, count in self.reloads.items()
            ),
            f"# HELP {_PREFIX}_generation The number of the generation serving.",
            f"# TYPE {_PREFIX}_generation gauge",
            f"{_PREFIX}_generation {self.generation}",
        ]
        return "\n".join(lines) + "\n"

    def write(self) -> None:
        """Replace the file with the current metrics (mode 0644).

        Written beside it, then renamed over it: a reader never sees half a
        file, and a symlink at the path is replaced, not followed.

        Raises:
            OSError: it cannot be written.
        """
        fd, name = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"
        )
        temporary = Path(name)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                os.fchmod(file.fileno(), 0o644)  # for an exporter under another uid
                file.write(self.text())
            temporary.replace(self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise

    def reload_ended(self, outcome: ReloadOutcome, generation: int) -> None:
        """Count a reload's outcome, with ``generation`` serving now, and write.

        Raises:
            OSError: the file cannot be written (the counts are kept).
        """
        self.reloads[outcome] += 1
        self.generation = generation
        self.write()
