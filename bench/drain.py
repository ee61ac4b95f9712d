"""SIGTERM under load: bare hypercorn and uvicorn versus shutdown_scope's serve().

``python bench/drain.py [--quick] [--rounds N] [--seconds S] [--verbose]`` runs,
in one go, four servers as child processes on 127.0.0.1 (each on a free port the
kernel picks), all with the same ``/work?ms=N`` ASGI route:

* **bare-asyncio**, **bare-trio**: the hypercorn CLI, ``python -m hypercorn
  --worker-class asyncio|trio --graceful-timeout 10``, serving the plain app of
  ``examples/work_app.py``;
* **ours-asyncio**, **ours-trio**: ``examples/hypercorn_app.py --backend
  asyncio|trio --drain-timeout 10``: ``shutdown_scope.hypercorn.serve`` under a
  ``graceful_scope``;
* **bare-uvicorn**: the uvicorn CLI, ``python -m uvicorn
  --timeout-graceful-shutdown 10``, serving the same plain app, and
  **ours-uvicorn**: ``examples/uvicorn_app.py --drain-timeout 10``
  (``shutdown_scope.uvicorn.serve``); both on asyncio, when uvicorn is installed.

Both apps print, at their lifespan shutdown, how many ``/work`` requests they
read and answered, so both sides are counted the same way. The load is
``examples/http_load.py``: 32 keep-alive HTTP/1.1 clients, in this process.

1. Steady state, no signal: ``/work?ms=0``, a warm-up and then N measured
   windows per server, interleaved (the order flips every round) so drift and
   the neighbours' load hit every server alike. The median requests per second
   of each server; ours / bare for the same worker, as the median of the
   rounds' ratios (the two are measured one right after the other). And, where
   Linux's /proc tells, the CPU time the server's processes spent per request
   (the load generator shares the machine, so requests per second also depend
   on it; CPU per request is the server's own cost).
2. Shutdown under load, on a fresh server each: ``/work?ms=5``; SIGTERM once
   the clients have run 0.5 s; the clients go on until the server has exited.
   Per server: requests answered (and how many of them after the SIGTERM);
   requests lost in flight, two ways: the clients' ``lost`` (the connection
   broke after a request was sent on a new connection, or in the middle of an
   answer) and "unanswered", the requests the server read minus those whose
   answer reached a client; connections refused and reused connections closed
   idle (see ``examples/http_load.py``); the time from SIGTERM to the exit of the
   process (the return of ``waitpid``), and from the last answer a client got to
   that exit.
3. The same over HTTP/2 (h2c), on fresh servers: ``examples/h2_load.py``'s
   streams, each answered, failed or not processed (see ``bench/h2_drain.py``).

The goals (from the issue): ours loses no request in flight; its throughput is
at least 0.97 of bare hypercorn's on the same worker; it exits within 50 ms of
the last request in flight finishing; over HTTP/2, it fails no stream. The
bench is a measurement: it exits 0 whether or not a goal is met, and 1 only if
a server could not be started.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import math
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server_children import (
    DRAIN_TIMEOUT,
    Server,
    StartError,
    cpu_seconds,
    start_servers,
)
from _sigterm_load import Stopped, sigterm_under_load
from _table import table_row
from h2_drain import measure_h2_shutdown, report_h2
from http_load import LoadStats, run_load

CLIENTS = 32
STEADY_TARGET = "/work?ms=0"
SHUTDOWN_TARGET = "/work?ms=5"
GOAL_RATIO = 0.97
GOAL_EXIT_MS = 50.0


# -- 1. steady state --------------------------------------------------------------


@dataclasses.dataclass
class Steady:
    """One server's steady-state windows."""

    rates: list[float] = dataclasses.field(default_factory=list)
    # Requests that did not simply get a 200 (none expected without a signal).
    odd: int = 0
    # CPU seconds the server's processes spent in the windows, and the requests
    # answered in them; cpu is None where /proc cannot tell.
    cpu: float | None = 0.0
    answered: int = 0

    @property
    def cpu_us(self) -> float | None:
        """The server's CPU time per answered request, in microseconds."""
        if self.cpu is None or not self.answered:
            return None
        return self.cpu / self.answered * 1e6

    @property
    def median(self) -> float:
        """The median requests per second."""
        return statistics.median(self.rates)

    @property
    def spread(self) -> float:
        """(max - min) / median of the windows, in percent."""
        if not self.median:
            return math.inf
        return (max(self.rates) - min(self.rates)) / self.median * 100


async def _window(server: Server, seconds: float, steady: Steady | None) -> None:
    cpu_before = cpu_seconds(server.proc.pid)
    start = time.monotonic()
    stats = await run_load(server.url + STEADY_TARGET, clients=CLIENTS, seconds=seconds)
    elapsed = time.monotonic() - start
    cpu_after = cpu_seconds(server.proc.pid)
    if steady is not None:
        steady.rates.append(stats.answered / elapsed)
        steady.answered += stats.answered
        if steady.cpu is None or cpu_before is None or cpu_after is None:
            steady.cpu = None
        else:
            steady.cpu += cpu_after - cpu_before
        steady.odd += stats.lost + stats.refused + stats.closed_idle
        steady.odd += stats.answered - stats.statuses.get(200, 0)


def measure_steady(
    servers: list[Server], rounds: int, seconds: float, warmup: float
) -> dict[str, Steady]:
    """Warm every server up, then measure ``rounds`` windows each, interleaved."""
    for server in servers:
        anyio.run(_window, server, warmup, None)
    results = {server.name: Steady() for server in servers}
    for index in range(rounds):
        order = servers if index % 2 == 0 else servers[::-1]
        for server in order:
            anyio.run(_window, server, seconds, results[server.name])
    return results


# -- 2. shutdown under load ---------------------------------------------------------


Shutdown = Stopped[LoadStats]


def lost_nothing(down: Shutdown) -> bool:
    """No request lost in flight, by either count."""
    return down.stats.lost == 0 and down.unanswered == 0


async def _sigterm_under_load(server: Server, signal_after: float) -> Shutdown:
    stats = LoadStats()
    return await sigterm_under_load(
        server,
        signal_after,
        stats,
        lambda while_: run_load(
            server.url + SHUTDOWN_TARGET, clients=CLIENTS, stats=stats, while_=while_
        ),
    )


def measure_shutdown(servers: list[Server], signal_after: float) -> dict[str, Shutdown]:
    """SIGTERM each (fresh) server under load, one after the other."""
    return {
        server.name: anyio.run(_sigterm_under_load, server, signal_after)
        for server in servers
    }


def stop_idle(servers: list[Server]) -> None:
    """SIGTERM servers that carry no load and wait for them (to free the cores)."""
    for server in servers:
        server.signal_and_wait()


# -- the report ----------------------------------------------------------------------

COLUMNS = (
    ("server", 12),
    ("req/s", 7),
    ("spread", 6),
    ("cpu-us/req", 10),
    ("answered", 8),
    ("after-TERM", 10),
    ("lost", 4),
    ("unanswered", 10),
    ("refused", 7),
    ("closed-idle", 11),
    ("TERM->exit", 10),
    ("last->exit", 10),
    ("exit", 6),
)


def _row(cells: list[str]) -> str:
    return table_row(cells, COLUMNS)


def _cells(name: str, steady: Steady, down: Shutdown) -> list[str]:
    stats = down.stats
    unanswered = down.unanswered
    return [
        name,
        f"{steady.median:.0f}",
        f"{steady.spread:.1f}%",
        "?" if steady.cpu_us is None else f"{steady.cpu_us:.0f}",
        str(stats.answered),
        str(stats.answered - down.answered_before),
        str(stats.lost),
        "?" if unanswered is None else str(unanswered),
        str(stats.refused),
        str(stats.closed_idle),
        f"{down.term_to_exit_ms:.1f}",
        f"{down.last_answer_to_exit_ms:.1f}",
        "killed" if down.killed else str(down.exit_code),
    ]


def _ratio(ours: float, bare: float) -> float:
    return ours / bare if bare else math.inf


def _verdict(ok: bool) -> str:  # noqa: FBT001
    return "met" if ok else "NOT MET"


def report(
    workers: list[str],
    steady: dict[str, Steady],
    down: dict[str, Shutdown],
    *,
    verbose: bool = False,
) -> None:
    """Print the table, the ratios and the goals."""
    print(_row([name for name, _ in COLUMNS]))
    for worker in workers:
        for kind in ("bare", "ours"):
            name = f"{kind}-{worker}"
            print(_row(_cells(name, steady[name], down[name])))
    print(
        "  steady state: req/s, the median of the windows; spread, (max - min) /"
        " median; cpu-us/req, CPU time\n  of the server's processes per request."
        " Shutdown run: the other columns; lost, the clients' lost;\n  unanswered,"
        " read by the server minus answered to the clients; times in ms"
    )
    if verbose:
        for name, windows in steady.items():
            rates = " ".join(f"{rate:.0f}" for rate in windows.rates)
            print(f"  {name} windows, req/s in order: {rates}")
    odd = {name: s.odd for name, s in steady.items() if s.odd}
    if odd:
        print(f"  steady state: requests not answered 200 without a signal: {odd}")
    ratios = {}
    print(
        "throughput ratio ours / bare, same worker: the median of the rounds' ratios"
        " (each round measures both,\n  one after the other), their min - max, the"
        " ratio of the median req/s; and bare / ours of CPU per request"
    )
    for worker in workers:
        mine, bare = steady[f"ours-{worker}"], steady[f"bare-{worker}"]
        paired = [_ratio(o, b) for o, b in zip(mine.rates, bare.rates, strict=True)]
        ratios[worker] = statistics.median(paired)
        cpu = "?"
        if mine.cpu_us is not None and bare.cpu_us is not None:
            cpu = f"{bare.cpu_us / mine.cpu_us:.3f}"
        print(
            f"  {worker:<8} {ratios[worker]:.3f}  ({min(paired):.3f} -"
            f" {max(paired):.3f}; {_ratio(mine.median, bare.median):.3f});"
            f" CPU per request: {cpu}"
        )
    lost, ratio, exit_ = [], [], []
    for worker in workers:
        ours = down[f"ours-{worker}"]
        lost.append(
            f"{worker} {_verdict(lost_nothing(ours))} ({ours.stats.lost} lost,"
            f" {'?' if ours.unanswered is None else ours.unanswered} unanswered)"
        )
        ratio.append(
            f"{worker} {_verdict(ratios[worker] >= GOAL_RATIO)} ({ratios[worker]:.3f})"
        )
        last = ours.last_answer_to_exit_ms
        exit_.append(
            f"{worker} {_verdict(last <= GOAL_EXIT_MS and not ours.killed)}"
            f" ({last:.1f} ms)"
        )
    print(f"goal: ours loses 0 requests in flight: {'; '.join(lost)}")
    print(f"goal: throughput ratio >= {GOAL_RATIO:g}: {'; '.join(ratio)}")
    print(
        f"goal: ours exits within {GOAL_EXIT_MS:g} ms of the last answer:"
        f" {'; '.join(exit_)}"
    )


def run(args: argparse.Namespace) -> None:
    """Both measurements, then the report."""
    workers = ["asyncio"]
    if importlib.util.find_spec("trio") is not None:
        workers.append("trio")
    if importlib.util.find_spec("uvicorn") is not None:
        workers.append("uvicorn")  # a server of its own, on asyncio
    names = ("anyio", "h11", "hypercorn", *workers[1:])
    versions = ", ".join(f"{name} {metadata.version(name)}" for name in names)
    print(f"drain bench: Python {sys.version.split()[0]}, {versions}")
    print(
        f"  {CLIENTS} keep-alive clients. Steady state: {STEADY_TARGET},"
        f" {args.warmup:g} s warm-up, then {args.rounds} x {args.seconds:g} s per"
        f" server, interleaved.\n  Shutdown: a fresh server, {SHUTDOWN_TARGET},"
        f" SIGTERM after {args.signal_after:g} s; the clients run until it exits."
        f"\n  bare: python -m hypercorn --graceful-timeout {DRAIN_TIMEOUT:g};"
        f" ours: examples/hypercorn_app.py --drain-timeout {DRAIN_TIMEOUT:g}"
        f"\n  bare-uvicorn: python -m uvicorn --timeout-graceful-shutdown"
        f" {DRAIN_TIMEOUT:.0f}; ours-uvicorn: examples/uvicorn_app.py",
        flush=True,
    )
    with contextlib.ExitStack() as stack:
        servers = start_servers(stack, workers)
        steady = measure_steady(servers, args.rounds, args.seconds, args.warmup)
        stop_idle(servers)
        fresh = start_servers(stack, workers)
        down = measure_shutdown(fresh, args.signal_after)
        # uvicorn serves HTTP/1.1 only: the HTTP/2 table is hypercorn's.
        http2_workers = [worker for worker in workers if worker != "uvicorn"]
        fresh_h2 = start_servers(stack, http2_workers)
        down_h2 = measure_h2_shutdown(list(fresh_h2), args.signal_after)
    report(workers, steady, down, verbose=args.verbose)
    report_h2([server.name for server in fresh_h2], down_h2)


def main() -> int:
    """Parse the options and run the bench; 1 if a server did not start."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny windows, 1 round")
    parser.add_argument("--rounds", type=int, help="steady-state windows per server")
    parser.add_argument("--seconds", type=float, help="length of one window")
    parser.add_argument(
        "--verbose", action="store_true", help="every window's requests per second"
    )
    args = parser.parse_args()
    quick = {"rounds": 1, "seconds": 0.3, "warmup": 0.2, "signal_after": 0.3}
    full = {"rounds": 8, "seconds": 0.75, "warmup": 1.0, "signal_after": 0.5}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.rounds < 1 or args.seconds <= 0:
        parser.error("--rounds must be at least 1 and --seconds positive")
    try:
        run(args)
    except StartError as error:
        print(f"drain bench: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
