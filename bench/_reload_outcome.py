"""What each method of bench/reload.py did under load, and its table.

``Load`` counts the requests; ``Reload`` is one reload or restart; ``Outcome``
is one method's result, with its goal (``met``); ``report`` prints the table,
the notes and the goals.
"""

from __future__ import annotations

import dataclasses
import itertools
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from _table import table_row
from http_load import LoadStats

__all__ = ["Load", "Outcome", "Reload", "report"]


class Load(LoadStats):
    """``LoadStats`` as this bench counts: resets apart, only 200 answers timed."""

    @property
    def lost_other(self) -> int:
        """Lost requests that were not reset."""
        return self.lost - self.resets

    @property
    def not_ok(self) -> int:
        """Answers other than 200 (a request the app could not finish: 500)."""
        return self.answered - self.statuses.get(200, 0)

    @property
    def failed(self) -> int:
        """Requests refused, reset, lost, or answered with another status than 200."""
        return self.refused + self.lost + self.not_ok

    def in_window(self, start: float, end: float) -> list[tuple[float, float]]:
        """``(completed, latency)`` of the 200 answers completed in ``[start, end]``."""
        return [
            (at, latency)
            for at, status, latency in self.answer_log
            if status == 200 and start <= at <= end  # noqa: PLR2004 -- HTTP OK
        ]


@dataclasses.dataclass
class Reload:
    """One reload or restart: did it work, when it began, how long it took, what
    was said."""

    ok: bool
    started: float  # time.monotonic()
    seconds: float
    text: str


def _second(pair: tuple[float, float]) -> float:
    return pair[1]


@dataclasses.dataclass
class Outcome:
    """What one method did under load."""

    name: str
    stats: Load
    window: tuple[float, float]  # the reload window, time.monotonic()
    reloads: list[Reload]
    exit_codes: list[int]  # launcher: its own; naive: each process's
    killed: bool
    counts: list[tuple[int, int]] | None  # each app's (read, answered)
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def reloads_ok(self) -> int:
        """How many reloads worked."""
        return sum(r.ok for r in self.reloads)

    @property
    def unanswered(self) -> int | None:
        """Requests the apps read minus those whose answer reached a client."""
        if self.counts is None:
            return None
        return sum(read for read, _ in self.counts) - self.stats.answered

    @property
    def slowest_ms(self) -> float:
        """The slowest request answered in the reload window."""
        answers = self.stats.in_window(*self.window)
        return max((lat for _, lat in answers), default=0.0) * 1000

    @property
    def gap_ms(self) -> float:
        """The longest time in the reload window without an answer to any client."""
        return self._gap()[1] * 1000

    def _gap(self) -> tuple[float, float]:
        """The longest gap in the reload window: its start and its length."""
        start, end = self.window
        times = sorted(t for t, _ in self.stats.in_window(start, end))
        points = [start, *times, end]
        return max(((a, b - a) for a, b in itertools.pairwise(points)), key=_second)

    def where_gap(self) -> str:
        """Where the longest gap began, relative to the reload before it."""
        began, _ = self._gap()
        before = [(n, r) for n, r in enumerate(self.reloads, 1) if r.started <= began]
        if not before:
            return "before the first reload"
        number, reload = before[-1]
        return f"{(began - reload.started) * 1000:.0f} ms after reload {number} began"

    @property
    def exits_clean(self) -> bool:
        """Every process (and generation) exited 0 by itself."""
        codes_ok = all(code == 0 for code in self.exit_codes)
        return codes_ok and not self.killed and not self.notes

    @property
    def met(self) -> bool:
        """The goal: nothing failed, every reload done, no gap past the slowest."""
        return (
            self.stats.failed == 0
            and self.unanswered == 0
            and self.reloads_ok == len(self.reloads)
            and self.exits_clean
            and self.gap_ms <= self.slowest_ms
        )


COLUMNS = (
    ("method", 8),
    ("reloads", 7),
    ("answered", 8),
    ("refused", 7),
    ("reset", 5),
    ("lost", 4),
    ("not-200", 7),
    ("unanswered", 10),
    ("closed-idle", 11),
    ("slowest-ms", 10),
    ("gap-ms", 7),
    ("reload-ms", 9),
    ("exit", 6),
)


def _row(cells: list[str]) -> str:
    return table_row(cells, COLUMNS)


def _exit_cell(outcome: Outcome) -> str:
    if outcome.killed:
        return "killed"
    odd = sorted({code for code in outcome.exit_codes if code != 0})
    return ",".join(map(str, odd)) if odd else "0"


def _cells(outcome: Outcome) -> list[str]:
    stats = outcome.stats
    unanswered = outcome.unanswered
    durations = [r.seconds for r in outcome.reloads]
    return [
        outcome.name,
        f"{outcome.reloads_ok}/{len(outcome.reloads)}",
        str(stats.answered),
        str(stats.refused),
        str(stats.resets),
        str(stats.lost_other),
        str(stats.not_ok),
        "?" if unanswered is None else str(unanswered),
        str(stats.closed_idle),
        f"{outcome.slowest_ms:.1f}",
        f"{outcome.gap_ms:.1f}",
        f"{statistics.median(durations) * 1000:.0f}" if durations else "-",
        _exit_cell(outcome),
    ]


def _goal(outcome: Outcome) -> str:
    stats = outcome.stats
    unanswered = "?" if outcome.unanswered is None else outcome.unanswered
    verdict = "met" if outcome.met else "NOT MET"
    return (
        "goal: 0 failed requests and no gap longer than the slowest request:"
        f" {outcome.name} {verdict} ({stats.failed} failed: {stats.refused} refused,"
        f" {stats.resets} reset, {stats.lost_other} lost, {stats.not_ok} not 200;"
        f" {unanswered} unanswered; longest gap {outcome.gap_ms:.1f} ms, slowest"
        f" request {outcome.slowest_ms:.1f} ms; {outcome.reloads_ok}"
        f"/{len(outcome.reloads)} reloads done; exit codes"
        f" {'0' if outcome.exits_clean else 'NOT all 0'})"
    )


def report(outcomes: list[Outcome], *, verbose: bool = False) -> None:
    """Print the table, the notes and the goals."""
    print(_row([name for name, _ in COLUMNS]))
    for outcome in outcomes:
        print(_row(_cells(outcome)))
    print(
        "  answered (not-200: of those, answered with another status), reset,"
        " lost, closed-idle: requests;\n  refused: connection attempts (retried"
        " every 5 ms); unanswered: read by the apps minus answered\n  to the"
        " clients; slowest-ms, gap-ms: the slowest 200 answer and the longest"
        " time without one,\n  from the first reload to the end of the load;"
        " reload-ms: the median reload (launcher: `reload\n  --control` until it"
        " returns; naive: SIGTERM until the new process listens)"
    )
    for outcome in outcomes:
        for note in outcome.notes:
            print(f"  {note}")
        if outcome.counts is None:
            print(f"  {outcome.name}: an app printed no lifespan counts")
        if verbose:
            times = " ".join(f"{r.seconds * 1000:.0f}" for r in outcome.reloads)
            print(f"  {outcome.name} reloads, ms in order: {times}")
            print(f"  {outcome.name} longest gap: {outcome.where_gap()}")
            print(f"  {outcome.name} apps, (read, answered): {outcome.counts}")
    for outcome in outcomes:
        print(_goal(outcome))
