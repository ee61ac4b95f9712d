"""The HTTP/2 part of ``bench/reload.py``: launcher reloads under h2c load.

The launcher method again, with ``examples/h2_load.py``'s load instead of
HTTP/1.1 clients: 4 connections with 8 streams each in flight on ``/work?ms=10``,
over cleartext HTTP/2 with prior knowledge. Each reload drains the old
generation: its connections get GOAWAY, finish their streams and close; the
clients open new connections, which the new generation accepts on the same
socket. Per run: reloads done, streams answered, failed (reset, or cut while a
GOAWAY covered them), not processed (excluded by a GOAWAY: retry-safe),
connections refused, "unanswered" (requests the apps read minus streams
answered) and the exit code. The goal: 0 failed streams over every reload.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import anyio
import anyio.to_thread

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import table_row
from h2_load import H2Stats, run_h2_load

__all__ = ["H2ReloadOutcome", "measure_h2_reloads", "report_h2_reloads"]

CONNECTIONS = 4
STREAMS = 8
TARGET = "/work?ms=10"


class _Reload(Protocol):
    ok: bool
    text: str


@dataclasses.dataclass
class H2ReloadOutcome:
    """What the launcher did under HTTP/2 load."""

    stats: H2Stats
    reloads_ok: int
    reloads: int
    exit_code: int
    killed: bool
    counts: list[tuple[int, int]] | None  # each app's (read, answered)

    @property
    def unanswered(self) -> int | None:
        """Requests the apps read minus the streams answered to the clients."""
        if self.counts is None:
            return None
        return sum(read for read, _ in self.counts) - self.stats.answered

    @property
    def met(self) -> bool:
        """0 failed streams, none unanswered, every reload done, exit code 0."""
        return (
            self.stats.failed == 0
            and self.stats.refused == 0
            and self.unanswered == 0
            and self.reloads_ok == self.reloads
            and self.exit_code == 0
            and not self.killed
        )


async def measure_h2_reloads(
    port: int,
    *,
    reloads: int,
    warmup: float,
    pause: float,
    reload_once: Callable[[], _Reload],
) -> tuple[H2Stats, list[_Reload]]:
    """``reloads`` reloads (``reload_once``, in a thread) under HTTP/2 load."""
    stats, going = H2Stats(), [True]
    done: list[_Reload] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(
            lambda: run_h2_load(
                f"http://127.0.0.1:{port}{TARGET}",
                connections=CONNECTIONS,
                streams=STREAMS,
                stats=stats,
                while_=lambda: bool(going),
            )
        )
        await anyio.sleep(warmup)
        for number in range(1, reloads + 1):
            reload = await anyio.to_thread.run_sync(reload_once)
            done.append(reload)
            if not reload.ok:
                print(f"  launcher-h2: reload {number} failed: {reload.text}")
            await anyio.sleep(pause)
        going.clear()
    return stats, done


_COLUMNS = (
    ("method", 11),
    ("reloads", 7),
    ("answered", 8),
    ("failed", 6),
    ("not-processed", 13),
    ("refused", 7),
    ("unanswered", 10),
    ("exit", 6),
)


def report_h2_reloads(outcome: H2ReloadOutcome) -> None:
    """Print the HTTP/2 row and its goal."""
    stats = outcome.stats
    unanswered = "?" if outcome.unanswered is None else str(outcome.unanswered)
    print(
        f"HTTP/2 (h2c): the launcher again, {CONNECTIONS} connections x {STREAMS}"
        f" streams of {TARGET}"
    )
    cells = [
        "launcher-h2",
        f"{outcome.reloads_ok}/{outcome.reloads}",
        str(stats.answered),
        str(stats.failed),
        str(stats.not_processed),
        str(stats.refused),
        unanswered,
        "killed" if outcome.killed else str(outcome.exit_code),
    ]
    for row in ([name for name, _ in _COLUMNS], cells):
        print(table_row(row, _COLUMNS))
    print(
        "  streams: failed (reset, or cut while a GOAWAY covered it), not-processed"
        " (above a GOAWAY's last\n  stream: retry-safe); refused: connection"
        " attempts; unanswered: read by the apps minus answered"
    )
    verdict = "met" if outcome.met else "NOT MET"
    print(
        f"goal: 0 failed HTTP/2 streams over every reload: launcher-h2 {verdict}"
        f" ({stats.failed} failed, {stats.refused} refused; {unanswered}"
        f" unanswered; {outcome.reloads_ok}/{outcome.reloads} reloads done;"
        f" exit code {outcome.exit_code})"
    )


if __name__ == "__main__":
    sys.exit("run bench/reload.py: this is its HTTP/2 part")
