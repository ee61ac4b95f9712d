"""bench/reload.py's rows for other servers: `shutdown-scope serve` and plain uvicorn.

Each row serves ``examples/work_app.py`` and is reloaded under the same load
(``bench/workers.py``'s ``measure_reloads``, whose code starts and reloads them):

* ``serve-hypercorn-asyncio``, ``serve-hypercorn-trio``, ``serve-uvicorn``:
  ``shutdown-scope run --listen ... -- shutdown-scope serve work_app:app
  --server S [--backend B]``, reloaded with ``shutdown-scope reload --control``;
  goal: 0 failed requests, every reload done.
* ``uvicorn-fd3``: plain ``uvicorn --fd 3 work_app:app`` under ``shutdown-scope
  run --ready accepting``; goal: every reload done, and no more failed requests
  than ``uvicorn-workers2``: ``uvicorn --workers 2``'s own SIGHUP restart,
  measured in the same run.

"failed" is lost + refused + answered with another status than 200; a reused
connection closed idle is retried by the clients and not counted.
"""

from __future__ import annotations

import argparse
import dataclasses

from _workers_servers import SERVE_ROWS
from workers import measure_reloads

# Row name -> the server's name in bench/workers.py.
ROWS = {
    **{name: name for name in SERVE_ROWS},
    "uvicorn-fd3": "uvicorn-fd3",
    "uvicorn-workers2": "uvicorn",
}
# The baseline of uvicorn-fd3 (it is measured just before it).
BASELINE = "uvicorn-workers2"
COLUMNS = ("server", "reloads", "answered", "failed", "lost", "refused", "not-200")


@dataclasses.dataclass
class Row:
    """One server's reloads."""

    name: str
    reloads: int
    done: int
    answered: int
    lost: int
    refused: int
    not_ok: int

    @property
    def failed(self) -> int:
        """Requests that failed: lost, refused, or not answered 200."""
        return self.lost + self.refused + self.not_ok


def measure(
    names: list[str], *, reloads: int, clients: int, work_ms: int, pause: float
) -> list[Row]:
    """Reload each server of ``names`` (keys of ``ROWS``), one after the other."""
    args = argparse.Namespace(
        reloads=reloads, clients=clients, work_ms=work_ms, pause=pause
    )
    if "uvicorn-fd3" in names and BASELINE not in names:
        names = [*names, BASELINE]
    rows = []
    for name in names:
        stats, done = measure_reloads(ROWS[name], args)
        not_ok = sum(n for status, n in stats.statuses.items() if status != 200)  # noqa: PLR2004
        rows.append(
            Row(name, reloads, done, stats.answered, stats.lost, stats.refused, not_ok)
        )
    return rows


def _goal(row: Row, rows: dict[str, Row]) -> str | None:
    every = row.done == row.reloads
    counts = f"{row.failed} failed; {row.done}/{row.reloads} reloads done"
    if row.name in SERVE_ROWS:
        met = every and row.failed == 0
        return f"goal: 0 failed requests over every reload: {row.name} " + (
            f"met ({counts})" if met else f"NOT MET ({counts})"
        )
    if row.name == "uvicorn-fd3":
        baseline = rows[BASELINE].failed
        met = every and row.failed <= baseline
        return (
            "goal: every reload done, failed no more than uvicorn --workers 2's"
            f" SIGHUP restart ({baseline}): uvicorn-fd3 "
            + (f"met ({counts})" if met else f"NOT MET ({counts})")
        )
    return None


def report(rows: list[Row], *, work_ms: int, clients: int, pause: float) -> None:
    """Print the table and the goals."""
    print(
        f"\nother servers: {clients} keep-alive clients on /work?ms={work_ms}"
        f" (examples/work_app.py), {pause:g} s pause after each reload;\n  serve-*:"
        " shutdown-scope run --listen 127.0.0.1:PORT -- shutdown-scope serve"
        " work_app:app --server S [--backend B];\n  uvicorn-fd3: shutdown-scope run"
        " --listen 127.0.0.1:PORT --ready accepting -- uvicorn --fd 3 work_app:app;"
        "\n  uvicorn-workers2: uvicorn --workers 2 --port PORT work_app:app, reloaded"
        " by its own SIGHUP restart"
    )
    print(
        " ".join(
            f"{name:>10}" if i else f"{name:<24}" for i, name in enumerate(COLUMNS)
        )
    )
    for row in rows:
        cells = [
            f"{row.done}/{row.reloads}",
            *map(str, (row.answered, row.failed, row.lost, row.refused, row.not_ok)),
        ]
        print(f"{row.name:<24}" + " ".join(f"{cell:>10}" for cell in cells))
    by_name = {row.name: row for row in rows}
    for row in rows:
        goal = _goal(row, by_name)
        if goal is not None:
            print(goal)
