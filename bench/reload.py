"""Reload under load: ``shutdown-scope run --listen`` versus a naive restart.

``python bench/reload.py [--quick] [--backend asyncio|trio] [--reloads N]
[--clients N] [--verbose]`` serves ``examples/hypercorn_app.py``
(``shutdown_scope.hypercorn.serve`` under a ``graceful_scope``, ``--drain-timeout
10``) two ways, one after the other in the same run, under the same load: keep-alive
HTTP/1.1 clients (32 by default) on ``/work?ms=10`` (a request that works 10 ms),
run in this process.

* **launcher**: ``python -m shutdown_scope run --listen 127.0.0.1:0 --control PATH
  -- python examples/hypercorn_app.py``. After a warm-up, N reloads one after the
  other, each through ``python -m shutdown_scope reload --control PATH``: the
  launcher starts a successor on the same listening socket, waits for its READY=1,
  then SIGTERMs the old generation, which drains. The bench waits for the old
  generation to exit, pauses, and asks for the next reload.
* **naive**: ``python examples/hypercorn_app.py --bind 127.0.0.1:PORT``. After the
  same warm-up, N times: SIGTERM the process, wait for it to exit (it drains just as
  gracefully), start a new one on the same port, wait until it prints
  ``listening``; pause. PORT lies below the kernel's ephemeral port range: while
  nothing listens on a port in that range, a client's connect can be given that
  very port as its source and connect to itself (TCP simultaneous open), and then
  hold the port the new server needs.

The clients are those of ``examples/http_load.py`` (each request is answered,
refused, closed idle or lost); of the lost ones, those reset by the peer
(ECONNRESET) are shown apart as ``reset``, and only 200 answers are timed. Per
method, the bench prints: requests answered,
and how many of them with another status than 200 (a request the app could not
finish gets a 500); connections refused; requests reset and lost in flight; reused
connections closed idle (the server never read that request: HTTP/1.1 lets a client
retry it, and our clients do, on a new connection); "unanswered": the requests the
app's generations read (their lifespan lines, ``N read, M answered``) minus those
whose answer reached a client; the slowest successful (200) request and the longest
time without a successful answer to any client, both over the reload window (from
the first reload to the end of the load); the median time one reload took; and the
exit codes.

Then the launcher method once more under HTTP/2 (h2c) load: streams answered,
failed or not processed (see ``bench/h2_reload.py``); the goal there: 0 failed
streams over every reload.

Then other servers, reloaded under the same kind of load (``bench/_serve_reloads.py``):
``shutdown-scope serve`` with hypercorn (asyncio, trio) and uvicorn under the
launcher (goal: 0 failed requests over every reload), and plain ``uvicorn --fd 3``
under ``--ready accepting`` (goal: every reload done, no more failed requests than
``uvicorn --workers 2``'s own SIGHUP restart, measured in the same run). ``--servers``
chooses them (``--quick``: serve-uvicorn and uvicorn-fd3, one reload each).

The goal (from the issue): 0 failed requests (refused + reset + lost + not 200, none
unanswered, every reload done, every process exited 0) and no gap longer than the
slowest request, over every reload. The naive restart is the baseline and is
expected to miss it. The bench is a measurement: it exits 0 whether or not a goal is
met, and 1 only if a server could not be started or stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from importlib import metadata
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _reload_children import DRAIN_TIMEOUT, BenchError
from _reload_methods import (
    TARGET,
    WORK_MS,
    Plan,
    measure_launcher,
    measure_launcher_h2,
    measure_naive,
)
from _reload_outcome import report
from _serve_reloads import ROWS as SERVER_ROWS
from _serve_reloads import measure as measure_servers
from _serve_reloads import report as report_servers
from h2_reload import report_h2_reloads


def run(args: argparse.Namespace) -> None:
    """Both methods, one after the other, then the report."""
    plan = Plan(
        backend=args.backend,
        clients=args.clients,
        reloads=args.reloads,
        warmup=args.warmup,
        pause=args.pause,
    )
    names = ("anyio", "h11", "hypercorn", *(["trio"] if plan.backend == "trio" else []))
    versions = ", ".join(f"{name} {metadata.version(name)}" for name in names)
    print(f"reload bench: Python {sys.version.split()[0]}, {versions}")
    print(
        f"  {plan.clients} keep-alive clients on {TARGET}; {plan.warmup:g} s"
        f" warm-up, then {plan.reloads} reloads, {plan.pause:g} s pause after"
        f" each.\n  app: examples/hypercorn_app.py --backend {plan.backend}"
        f" --drain-timeout {DRAIN_TIMEOUT:g}\n  launcher: python -m shutdown_scope"
        " run --listen 127.0.0.1:0 --control PATH -- APP; reload --control PATH,"
        " wait\n  for the old generation's exit. naive: SIGTERM APP --bind"
        " 127.0.0.1:PORT, wait for its exit, start a new\n  one, wait for"
        " `listening`.",
        flush=True,
    )
    outcomes = []
    for measure in (measure_launcher, measure_naive):
        with contextlib.ExitStack() as stack:
            outcomes.append(anyio.run(measure, plan, stack))
    with contextlib.ExitStack() as stack:
        over_h2 = anyio.run(measure_launcher_h2, plan, stack)
    report(outcomes, verbose=args.verbose)
    report_h2_reloads(over_h2)
    if args.servers:
        server_reloads = 1 if args.quick else plan.reloads
        rows = measure_servers(
            args.servers,
            reloads=server_reloads,
            clients=plan.clients,
            work_ms=WORK_MS,
            pause=plan.pause,
        )
        report_servers(rows, work_ms=WORK_MS, clients=plan.clients, pause=plan.pause)


def main() -> int:
    """Parse the options and run the bench; 1 if a server did not start or stop."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 reloads, 16 clients")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--reloads", type=int, help="reloads per method")
    parser.add_argument("--clients", type=int, help="keep-alive clients")
    parser.add_argument(
        "--verbose", action="store_true", help="each reload's time, each app's counts"
    )
    parser.add_argument(
        "--servers",
        type=lambda text: [name for name in text.split(",") if name],
        help=f"the other servers' rows, comma-separated, of {','.join(SERVER_ROWS)}"
        " (none: an empty string)",
    )
    args = parser.parse_args()
    if args.servers is None:
        args.servers = (
            ["serve-uvicorn", "uvicorn-fd3"] if args.quick else list(SERVER_ROWS)
        )
    unknown = sorted(set(args.servers) - set(SERVER_ROWS))
    if unknown:
        parser.error(f"--servers: unknown {', '.join(unknown)}")
    quick = {"reloads": 3, "clients": 16, "warmup": 0.3, "pause": 0.2}
    full = {"reloads": 10, "clients": 32, "warmup": 1.0, "pause": 0.5}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.reloads < 1 or args.clients < 1:
        parser.error("--reloads and --clients must be at least 1")
    try:
        run(args)
    except (BenchError, RuntimeError) as error:  # RuntimeError: from bench/workers.py
        print(f"reload bench: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
