"""The HTTP/2 part of ``bench/drain.py``: SIGTERM under h2c load.

Each server (a fresh one) gets ``examples/h2_load.py``'s load: 4 connections
with 8 streams each in flight, ``/work?ms=5``, over cleartext HTTP/2 with prior
knowledge; SIGTERM once the clients have run a while; they go on until the
server has exited. Per server: streams answered (and after the SIGTERM),
failed (reset, or cut while a GOAWAY covered them), not processed (excluded by
the GOAWAY, or refused: retry-safe), "unanswered" (requests the app read minus
streams answered), connections refused, the times from SIGTERM and from the
last answer to the exit. The goal: ours fails no stream and answers every
request it read.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _sigterm_load import SignalledServer, Stopped, sigterm_under_load
from _table import table_row
from h2_load import H2Stats, run_h2_load

__all__ = ["H2Shutdown", "measure_h2_shutdown", "report_h2"]

CONNECTIONS = 4
STREAMS = 8
TARGET = "/work?ms=5"

H2Shutdown = Stopped[H2Stats]


def failed_none(result: H2Shutdown) -> bool:
    """No stream failed and every request read was answered."""
    return result.stats.failed == 0 and result.unanswered == 0


async def _sigterm_under_load(
    server: SignalledServer, signal_after: float
) -> H2Shutdown:
    stats = H2Stats()
    return await sigterm_under_load(
        server,
        signal_after,
        stats,
        lambda while_: run_h2_load(
            server.url + TARGET,
            connections=CONNECTIONS,
            streams=STREAMS,
            stats=stats,
            while_=while_,
        ),
    )


def measure_h2_shutdown(
    servers: list[SignalledServer], signal_after: float
) -> dict[str, H2Shutdown]:
    """SIGTERM each (fresh) server under HTTP/2 load, one after the other."""
    return {
        server.name: anyio.run(_sigterm_under_load, server, signal_after)
        for server in servers
    }


_COLUMNS = (
    ("server", 12),
    ("answered", 8),
    ("after-TERM", 10),
    ("failed", 6),
    ("not-processed", 13),
    ("unanswered", 10),
    ("refused", 7),
    ("TERM->exit", 10),
    ("last->exit", 10),
    ("exit", 6),
)


def _row(cells: list[str]) -> str:
    return table_row(cells, _COLUMNS)


def report_h2(names: list[str], down: dict[str, H2Shutdown]) -> None:
    """Print the HTTP/2 table and its goal."""
    print(
        f"HTTP/2 (h2c): a fresh server, {CONNECTIONS} connections x {STREAMS}"
        f" streams of {TARGET}, SIGTERM under load"
    )
    print(_row([name for name, _ in _COLUMNS]))
    for name in names:
        result = down[name]
        stats = result.stats
        print(
            _row(
                [
                    name,
                    str(stats.answered),
                    str(stats.answered - result.answered_before),
                    str(stats.failed),
                    str(stats.not_processed),
                    "?" if result.unanswered is None else str(result.unanswered),
                    str(stats.refused),
                    f"{result.term_to_exit_ms:.1f}",
                    f"{result.last_answer_to_exit_ms:.1f}",
                    "killed" if result.killed else str(result.exit_code),
                ]
            )
        )
    print(
        "  failed: reset, or cut while a GOAWAY covered it; not-processed: above"
        " the GOAWAY's last stream\n  or REFUSED_STREAM (retry-safe); unanswered:"
        " read by the app minus answered; times in ms"
    )
    verdicts = []
    for name in names:
        if not name.startswith("ours-"):
            continue
        result = down[name]
        verdict = "met" if failed_none(result) else "NOT MET"
        unanswered = "?" if result.unanswered is None else result.unanswered
        verdicts.append(
            f"{name.removeprefix('ours-')} {verdict} ({result.stats.failed} failed,"
            f" {unanswered} unanswered)"
        )
    print(f"goal: ours fails 0 HTTP/2 streams on SIGTERM: {'; '.join(verdicts)}")


if __name__ == "__main__":
    sys.exit("run bench/drain.py: this is its HTTP/2 part")
