"""Steady throughput with wrk: serve() beside bare hypercorn and bare uvicorn.

``python bench/throughput.py [--quick] [--rounds N] [--seconds S]`` starts six
servers as child processes on 127.0.0.1, all serving ``/work?ms=0``:
**bare-asyncio** and **bare-trio** (the hypercorn CLI with the plain
``examples/work_app.py``), **ours-asyncio** and **ours-trio**
(``examples/hypercorn_app.py --plain``: ``shutdown_scope.hypercorn.serve``),
**bare-uvicorn** (the uvicorn CLI) and **ours-uvicorn**
(``examples/uvicorn_app.py --plain``: ``shutdown_scope.uvicorn.serve``); like
for like, every one serves the same app, ``examples/work_app.py``'s. Each round
runs ``wrk -t1 -c32 -dS --latency`` against each server in turn, the order
reversed every other round, so drift and the neighbours' load hit every
server alike. Printed per server: the median
req/s, the median p50 and p99 latency, and ours / bare on the same worker as
the median of the rounds' ratios. Then the middleware's own cost per request,
in-process (``bench/middleware_cost.py``).

Without ``wrk`` (Debian: ``apt-get install wrk``) the bench says so and uses
``examples/http_load.py``'s clients instead (req/s only, no percentiles).

The goal (from the issue): ours at least 0.97 of bare hypercorn's req/s on the
same worker (ours-uvicorn's, to bare uvicorn, is printed too). The bench is
a measurement: it exits 0 whether or not the goal is met, 1 if a server could
not be started.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import anyio

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from _server_children import EXAMPLES, Server, StartError  # noqa: E402
from middleware_cost import GOAL_NS, measure  # noqa: E402

sys.path.insert(0, str(EXAMPLES))
from http_load import run_load  # noqa: E402

CLIENTS = 32
TARGET = "/work?ms=0"
GOAL_RATIO = 0.97
SERVERS = (
    ("bare", "asyncio"),
    ("ours", "asyncio"),
    ("bare", "trio"),
    ("ours", "trio"),
    ("bare", "uvicorn"),
    ("ours", "uvicorn"),
)
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def run_wrk(wrk: str, url: str, seconds: float) -> tuple[float, float, float]:
    """``(req/s, p50 ms, p99 ms)`` of one wrk run."""
    argv = [
        wrk,
        "-t1",
        f"-c{CLIENTS}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        url,
    ]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.MULTILINE)[1])  # type: ignore[index]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE)[1])  # type: ignore[index]
    return rate, p50, p99


def run_own(url: str, seconds: float) -> tuple[float, float, float]:
    """``(req/s, nan, nan)`` with the project's own load clients."""
    start = time.monotonic()
    stats = anyio.run(lambda: run_load(url, clients=CLIENTS, seconds=seconds))
    return stats.answered / (time.monotonic() - start), float("nan"), float("nan")


def main() -> int:
    """Parse the options, measure, print the table, the ratios and the goal."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s")
    parser.add_argument("--rounds", type=int, help="runs per server (default 5)")
    parser.add_argument("--seconds", type=float, help="length of a run (default 3)")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 5)
    seconds = args.seconds or (1.0 if args.quick else 3.0)
    if rounds < 1 or seconds <= 0:
        parser.error("--rounds must be at least 1 and --seconds positive")
    wrk = shutil.which("wrk")
    tool = f"wrk -t1 -c{CLIENTS} --latency" if wrk else "examples/http_load.py"
    if wrk is None:
        print(
            "throughput bench: wrk not found (Debian: apt-get install wrk): using"
            " examples/http_load.py's clients instead; no latency percentiles"
        )
    print(
        f"throughput bench: Python {sys.version.split()[0]}; {tool}, {CLIENTS}"
        f" keep-alive clients, {TARGET}, {rounds} x {seconds:g} s per server,"
        " alternating",
        flush=True,
    )
    results: dict[str, list[tuple[float, float, float]]] = {}
    with contextlib.ExitStack() as stack:
        servers = []
        try:
            for kind, worker in SERVERS:
                server = Server(kind, worker, plain=True)
                stack.callback(server.close)
                servers.append(server)
            for server in servers:
                server.wait_ready(time.monotonic() + 30)
        except StartError as error:
            print(f"throughput bench: {error}", file=sys.stderr)
            return 1
        for server in servers:  # warm-up
            run_own(server.url + TARGET, 0.3)
        for index in range(rounds):
            for server in servers if index % 2 == 0 else servers[::-1]:
                url = server.url + TARGET
                one = run_wrk(wrk, url, seconds) if wrk else run_own(url, seconds)
                results.setdefault(server.name, []).append(one)
    print(f"  {'server':<13}{'req/s':>8}{'p50-ms':>8}{'p99-ms':>8}{'ratio':>7}")
    ratios = {}
    for kind, worker in SERVERS:
        name = f"{kind}-{worker}"
        runs = results[name]
        bare = results.get(f"bare-{worker}", runs)
        paired = [mine[0] / base[0] for mine, base in zip(runs, bare, strict=True)]
        ratios[name] = statistics.median(paired)
        print(
            f"  {name:<13}{statistics.median(r[0] for r in runs):>8.0f}"
            f"{statistics.median(r[1] for r in runs):>8.2f}"
            f"{statistics.median(r[2] for r in runs):>8.2f}{ratios[name]:>7.3f}"
        )
    print("  ratio: req/s / bare on the same worker, the median of the rounds' ratios")
    timings = anyio.run(measure, 3 if args.quick else 9, 20_000)
    bare_ns = timings["bare"]
    served, user = (
        statistics.median(w - b for w, b in zip(timings[name], bare_ns, strict=True))
        for name in ("serve()", "user")
    )
    print(
        f"  ShutdownMiddleware in-process: bare app {statistics.median(bare_ns):.0f}"
        f" ns/request, wrapped +{served:.0f} ns as serve() builds it,"
        f" +{user:.0f} ns user-wrapped (goal <= {GOAL_NS:.0f})"
    )
    verdicts = "; ".join(
        f"{w} {'met' if ratios[f'ours-{w}'] >= GOAL_RATIO else 'NOT MET'}"
        f" ({ratios[f'ours-{w}']:.3f})"
        for w in ("asyncio", "trio", "uvicorn")
    )
    print(f"goal: ours / bare req/s >= {GOAL_RATIO:g}: {verdicts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
