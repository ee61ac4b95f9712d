"""Workers: throughput with N = 1 and 2, reloads and a killed worker, side by side.

``python bench/workers.py [--quick] [--servers LIST] [--seconds S] [--reloads R]
[--clients C] [--install-granian | --granian-python PY] [--logs DIR]`` serves
``examples/work_app.py`` with, one after the other in the same run:

* **launcher**: ``shutdown-scope run --listen ... --workers N -- shutdown-scope
  serve work_app:app``, reloaded with ``shutdown-scope reload --control`` (which
  waits for the outcome; "reloads-ok" counts those that said it worked);
* **uvicorn** ``--workers N``, **hypercorn** ``-w N``, **gunicorn** ``-w N -k
  uvicorn_worker.UvicornWorker`` and **granian** ``--workers N
  --respawn-failed-workers``, each reloaded with its own SIGHUP restart. granian
  is used from this environment, from ``--granian-python``, or, with
  ``--install-granian``, pip-installed into a temporary venv; without any, its
  rows say it is missing;
* **uvicorn-fd3** (reloads only): plain ``uvicorn --fd 3`` under ``shutdown-scope
  run --ready accepting``, one process per generation.

The load is ``examples/http_load.py``'s keep-alive clients (C, 32 by default),
which log each answer's time, status and latency. "failed" is lost + refused +
not 200 (a reused connection closed idle is retried by the clients, not counted).

* **Throughput**: ``/work?ms=0`` for S seconds, N = 1 then N = 2; N=2/N=1, and
  ours/it: the launcher's N = 2 rate over this server's (goal: N=2/N=1 >= 1.7 and
  ours/it >= 0.95).
* **Reloads** (N = 2; uvicorn-fd3: 1): ``/work?ms=WORK`` (200) while R reloads (10)
  happen, each followed by a pause. A reload's window runs from its signal until
  none of the old workers is left and N new ones accept (read from /proc);
  slowest-ms is the slowest answer in flight at any moment of a window (goal: 0
  failed, slowest <= WORK + 30 ms), reload-ms the median window.
* **kill -9** (N = 2): the same load; SIGKILL to the accepting worker that holds
  the most sockets. failed: the requests lost; closed-idle: reused connections
  reset before any byte of an answer (the clients retry these: a request in
  flight on the killed worker shows here, not as lost);
  replaced-ms: until a new worker accepts ("never": none within 15 s).

"exit" is the server's exit code after the SIGTERM that ends each part. A server
that ended on its own during a part is reported below the table with the end of
its log (``--logs DIR`` keeps every log). The bench is a measurement: it exits 0
whatever the numbers, 1 if a server could not be started.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.to_thread

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _workers_servers import (
    EXAMPLES,
    SERVE_ROWS,
    SERVERS,
    Served,
    granian_python,
    serving,
)

sys.path.insert(0, str(EXAMPLES))
from http_load import LoadStats, run_load

WINDOW_TIMEOUT = 30.0  # a reload not done by then has no end (it counts to the next)
KILL_TIMEOUT = 15.0


@dataclasses.dataclass
class Part:
    """What one server did under load in one part of the bench."""

    stats: LoadStats = dataclasses.field(default_factory=LoadStats)
    windows: list[tuple[float, float | None]] = dataclasses.field(default_factory=list)
    reloads_ok: int = 0
    replaced_after: float | None = None
    exit_code: int | None = None
    ended_early: str | None = None

    @property
    def failed(self) -> int:
        """Requests lost, refused or answered with another status than 200."""
        not_ok = self.stats.answered - self.stats.statuses.get(200, 0)
        return self.stats.lost + self.stats.refused + not_ok

    def slowest_in_windows(self) -> float:
        """Seconds: the slowest answer in flight at any moment of a window."""
        latest = max((at for at, _, _ in self.stats.answer_log), default=0.0)
        spans = [
            (start, end if end is not None else latest) for start, end in self.windows
        ]
        return max(
            (
                latency
                for at, _, latency in self.stats.answer_log
                if any(at - latency <= end and at >= start for start, end in spans)
            ),
            default=0.0,
        )

    def median_window(self) -> float | None:
        """Seconds: the median reload window (None if no reload ended)."""
        done = [end - start for start, end in self.windows if end is not None]
        return statistics.median(done) if done else None


def _wait_for(
    served: Served, done: Callable[[dict[int, bool]], bool], timeout: float
) -> float | None:
    """time.monotonic() when ``done(worker_pids)`` is first true, or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done(served.worker_pids()):
            return time.monotonic()
        time.sleep(0.02)
    return None


def _reload_once(served: Served, part: Part) -> None:
    old = set(served.worker_pids())
    start = time.monotonic()
    part.reloads_ok += served.reload()

    def replaced(pids: dict[int, bool]) -> bool:
        new = [pid for pid, accepting in pids.items() if accepting and pid not in old]
        return not old & pids.keys() and len(new) >= served.workers

    part.windows.append((start, _wait_for(served, replaced, WINDOW_TIMEOUT)))


def _kill_one(served: Served, part: Part) -> None:
    before = served.worker_pids()
    # The busiest: one worker often accepted every keep-alive connection.
    victim = max(
        (pid for pid, accepting in before.items() if accepting), key=_sockets_held
    )
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()

    def replaced(pids: dict[int, bool]) -> bool:
        return any(accepting and pid not in before for pid, accepting in pids.items())

    at = _wait_for(served, replaced, KILL_TIMEOUT)
    part.replaced_after = None if at is None else at - killed


def _under_load(
    served: Served,
    args: argparse.Namespace,
    part: Part,
    events: Callable[[Served, Part], None],
    rounds: int,
) -> None:
    """Load ``served`` while ``events`` happens ``rounds`` times, each then a pause."""
    going = [True]
    url = f"http://127.0.0.1:{served.port}/work?ms={args.work_ms}"

    async def drive() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: run_load(
                    url,
                    clients=args.clients,
                    stats=part.stats,
                    while_=lambda: bool(going),
                )
            )
            await anyio.sleep(args.pause)
            for _ in range(rounds):
                await anyio.to_thread.run_sync(events, served, part)
                await anyio.sleep(args.pause)
            going.clear()

    anyio.run(drive)
    part.ended_early = served.ended_early()


def _run_part(
    server: str,
    workers: int,
    args: argparse.Namespace,
    body: Callable[[Served, Part], None],
) -> Part:
    part = Part()
    keep = (
        None if args.logs is None else Path(args.logs, f"{server}-{body.__name__}.log")
    )
    with serving(server, workers, args.granian, keep) as served:
        body(served, part)
    part.exit_code = served.proc.returncode
    return part


def measure_reloads(server: str, args: argparse.Namespace) -> tuple[LoadStats, int]:
    """The clients' stats over ``args.reloads`` reloads, and how many were done.

    For bench/reload.py. ``args``: ``reloads``, ``clients``, ``work_ms`` and
    ``pause`` (seconds before the first reload and after each); ``logs`` and
    ``granian`` are optional. The launcher and the peers run 2 workers; the
    rows of one process per generation (uvicorn-fd3, SERVE_ROWS) run 1.
    """
    for name, default in (("logs", None), ("granian", None)):
        if not hasattr(args, name):
            setattr(args, name, default)
    workers = 1 if server == "uvicorn-fd3" or server in SERVE_ROWS else 2
    part = _run_part(
        server,
        workers,
        args,
        lambda s, p: _under_load(s, args, p, _reload_once, args.reloads),
    )
    return part.stats, part.reloads_ok


def throughput(served: Served, part: Part, args: argparse.Namespace) -> None:
    """Steady load on ``/work?ms=0`` for ``args.seconds``."""
    url = f"http://127.0.0.1:{served.port}/work?ms=0"
    anyio.run(
        lambda: run_load(
            url, clients=args.clients, seconds=args.seconds, stats=part.stats
        )
    )
    part.ended_early = served.ended_early()


def _print_throughput(
    servers: list[str], args: argparse.Namespace, notes: list[str]
) -> None:
    print(f"throughput: {args.clients} clients, /work?ms=0, {args.seconds:g} s each")
    print("server        N=1-req/s  N=2-req/s  N=2/N=1  ours/it")
    ours: float | None = None
    for server in servers:
        if server == "uvicorn-fd3":
            continue
        rates = []
        for n in (1, 2):
            part = _run_part(server, n, args, lambda s, p: throughput(s, p, args))
            rates.append(part.stats.answered / args.seconds)
            if part.ended_early:
                notes.append(part.ended_early)
        one, two = rates
        ours = two if server == "launcher" else ours
        ratio = "-" if ours is None or server == "launcher" else f"{ours / two:.2f}"
        print(
            f"{server:<12} {one:>10.0f} {two:>10.0f} {two / one:>8.2f} {ratio:>8}",
            flush=True,
        )


def main() -> int:
    """Run the bench; the exit code (1 if a server could not be started)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--reloads", type=int, default=10)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--work-ms", type=int, default=200)
    parser.add_argument("--pause", type=float, default=2.0)
    parser.add_argument(
        "--servers", default=",".join(SERVERS), help=f"of {','.join(SERVERS)}"
    )
    parser.add_argument("--install-granian", action="store_true")
    parser.add_argument("--granian-python", help="a python that can import granian")
    parser.add_argument("--logs", help="keep every server's log in this directory")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.reloads, args.work_ms, args.pause = 0.5, 1, 20, 0.3
        args.clients = min(args.clients, 8)
    chosen = args.servers.split(",")
    unknown = set(chosen) - set(SERVERS)
    if unknown:
        parser.error(f"unknown servers: {', '.join(sorted(unknown))}")
    args.granian = None
    with contextlib.ExitStack() as stack:
        servers = [s for s in SERVERS if s in chosen]
        if "granian" in servers:
            args.granian, where = granian_python(
                stack, given=args.granian_python, install=args.install_granian
            )
            print(where)
            if args.granian is None:
                servers.remove("granian")
        notes: list[str] = []
        try:
            _print_throughput(servers, args, notes)
            _print_reloads(servers, args, notes)
            _print_kills(servers, args, notes)
        except RuntimeError as error:
            print(f"bench/workers.py: {error}", file=sys.stderr)
            return 1
        for note in notes:
            print(f"\n{note}")
    return 0


def _print_reloads(
    servers: list[str], args: argparse.Namespace, notes: list[str]
) -> None:
    print(f"\n{args.reloads} reloads, {args.clients} clients, /work?ms={args.work_ms}")
    print(
        "server        answered  failed  lost  refused  not-200  reloads-ok"
        "  slowest-ms  reload-ms  exit"
    )
    for server in servers:
        workers = 1 if server == "uvicorn-fd3" else 2
        part = _run_part(
            server,
            workers,
            args,
            lambda s, p: _under_load(s, args, p, _reload_once, args.reloads),
        )
        stats = part.stats
        not_ok = stats.answered - stats.statuses.get(200, 0)
        window = part.median_window()
        print(
            f"{server:<12} {stats.answered:>9} {part.failed:>7} {stats.lost:>5}"
            f" {stats.refused:>8} {not_ok:>8} {part.reloads_ok:>7}/{args.reloads:<3}"
            f" {part.slowest_in_windows() * 1000:>11.0f}"
            f" {_ms(window):>10} {part.exit_code:>5}",
            flush=True,
        )
        if part.ended_early:
            notes.append(part.ended_early)


def _print_kills(
    servers: list[str], args: argparse.Namespace, notes: list[str]
) -> None:
    print(f"\nkill -9 of one of 2 workers, {args.clients} clients", end="")
    print(f", /work?ms={args.work_ms}")
    print(
        "server        answered  failed  lost  refused  closed-idle  replaced-ms  exit"
    )
    for server in servers:
        if server == "uvicorn-fd3":
            continue
        part = _run_part(
            server, 2, args, lambda s, p: _under_load(s, args, p, _kill_one, 1)
        )
        stats = part.stats
        print(
            f"{server:<12} {stats.answered:>9} {part.failed:>7} {stats.lost:>5}"
            f" {stats.refused:>8} {stats.closed_idle:>12}"
            f" {_ms(part.replaced_after):>12} {part.exit_code:>5}",
            flush=True,
        )
        if part.ended_early:
            notes.append(part.ended_early)


def _sockets_held(pid: int) -> int:
    with contextlib.suppress(OSError):
        fds = Path(f"/proc/{pid}/fd")
        return sum(str(fd.readlink()).startswith("socket:") for fd in fds.iterdir())
    return 0


def _ms(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds * 1000:.0f}"


if __name__ == "__main__":
    sys.exit(main())
