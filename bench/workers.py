"""Workers: throughput with N = 1 and 2, and failed requests over reloads.

``python bench/workers.py [--quick] [--seconds S] [--reloads R] [--clients C]``
serves ``examples/work_app.py`` with, one after the other in the same run:

* **launcher**: ``shutdown-scope run --listen ... --workers N -- shutdown-scope
  serve work_app:app`` (hypercorn under ``graceful_scope``), reloaded with
  ``shutdown-scope reload --control`` (which waits for the outcome);
* **uvicorn**: ``uvicorn --workers N``, reloaded with its own SIGHUP restart;
* **hypercorn**: ``hypercorn -w N``, reloaded with its own SIGHUP restart;
* **uvicorn-fd3** (reloads only): plain ``uvicorn --fd 3`` under ``shutdown-scope
  run --ready accepting``, one process per generation.

``bench/reload.py`` reuses the reload part (``measure_reloads``), with the rows of
``SERVE_ROWS`` too: ``shutdown-scope serve`` with each server under the launcher.

Throughput: C keep-alive clients (``examples/http_load.py``) on ``/work?ms=0`` for
S seconds, N = 1 then N = 2. Reloads (N = 2; uvicorn-fd3: 1): C clients on
``/work?ms=WORK`` while R reloads happen, each followed by a pause; "failed" is
lost + refused + not 200 (a reused connection closed idle is retried by the
clients and not counted). The bench is a measurement: it exits 0 whatever the
numbers, 1 if a server cannot be started.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(EXAMPLES))
from http_load import LoadStats, run_load  # noqa: E402

PY = sys.executable
START_TIMEOUT = 30.0
# `shutdown-scope serve` under `shutdown-scope run`, one process per generation.
SERVE_ROWS = {
    "serve-hypercorn-asyncio": ("--server", "hypercorn", "--backend", "asyncio"),
    "serve-hypercorn-trio": ("--server", "hypercorn", "--backend", "trio"),
    "serve-uvicorn": ("--server", "uvicorn"),
}
# Reloaded by `shutdown-scope reload --control` (the others by their own SIGHUP).
UNDER_LAUNCHER = {"launcher", "uvicorn-fd3", *SERVE_ROWS}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _command(server: str, workers: int, port: int, control: str) -> list[str]:
    listen = ("--listen", f"127.0.0.1:{port}", "--control", control)
    if server == "launcher":
        return [
            *(PY, "-m", "shutdown_scope", "run", *listen, "--workers", str(workers)),
            *("-q", "--", PY, "-m", "shutdown_scope", "serve", "work_app:app"),
            *("--app-dir", str(EXAMPLES), "--log-level", "warning"),
        ]
    if server in SERVE_ROWS:
        return [
            *(PY, "-m", "shutdown_scope", "run", *listen, "-q", "--", PY, "-m"),
            *("shutdown_scope", "serve", "work_app:app", *SERVE_ROWS[server]),
            *("--app-dir", str(EXAMPLES), "--log-level", "warning"),
        ]
    if server == "uvicorn-fd3":
        return [
            *(PY, "-m", "shutdown_scope", "run", *listen, "--ready", "accepting"),
            *("-q", "--", PY, "-m", "uvicorn", "--fd", "3"),
            *("--app-dir", str(EXAMPLES), "--log-level", "warning", "work_app:app"),
        ]
    if server == "uvicorn":
        return [
            *(PY, "-m", "uvicorn", "--workers", str(workers), "--port", str(port)),
            *("--app-dir", str(EXAMPLES), "--log-level", "warning", "work_app:app"),
        ]
    return [
        *(PY, "-m", "hypercorn", "-w", str(workers), "-b", f"127.0.0.1:{port}"),
        *("--log-level", "warning", "work_app:app"),
    ]


@contextlib.contextmanager
def _serving(server: str, workers: int) -> Iterator[tuple[int, Callable[[], bool]]]:
    """The server, once it answers; its port and how to reload it.

    Reloading returns whether the reload was done (``reload --control`` exits
    0); a SIGHUP has no outcome to see, and counts as done.
    """
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        control = str(Path(tmp, "control"))
        proc = subprocess.Popen(
            _command(server, workers, port, control),
            cwd=EXAMPLES,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

        def reload() -> bool:
            if server in UNDER_LAUNCHER:
                argv = [PY, "-m", "shutdown_scope", "reload", "--control", control]
                done = subprocess.run(
                    argv, capture_output=True, check=False, timeout=60
                )
                return done.returncode == 0
            proc.send_signal(signal.SIGHUP)
            return True

        try:
            _wait_until_up(port, proc, workers)
            yield port, reload
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _wait_until_up(port: int, proc: subprocess.Popen[bytes], workers: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            msg = f"the server exited with code {proc.returncode}"
            raise RuntimeError(msg)
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=1) as conn,
        ):
            conn.sendall(
                b"GET /work?ms=0 HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"
            )
            if conn.recv(12).startswith(b"HTTP/1.1 200"):
                if workers > 1:
                    time.sleep(1.0)  # the other workers too
                return
        time.sleep(0.1)
    msg = "the server did not answer in time"
    raise RuntimeError(msg)


def throughput(server: str, workers: int, args: argparse.Namespace) -> float:
    """Requests per second."""
    with _serving(server, workers) as (port, _):
        stats = anyio.run(
            lambda: run_load(
                f"http://127.0.0.1:{port}/work?ms=0",
                clients=args.clients,
                seconds=args.seconds,
            )
        )
    rate: float = stats.answered / args.seconds
    return rate


def reloads(server: str, args: argparse.Namespace) -> LoadStats:
    """The clients' stats over ``args.reloads`` reloads."""
    stats, _ = measure_reloads(server, args)
    return stats


def measure_reloads(server: str, args: argparse.Namespace) -> tuple[LoadStats, int]:
    """The clients' stats over ``args.reloads`` reloads, and how many were done.

    ``args``: ``reloads``, ``clients``, ``work_ms`` and ``pause`` (seconds
    before the first reload and after each).
    """
    workers = 2 if server in {"launcher", "uvicorn", "hypercorn"} else 1
    stats = LoadStats()
    going = [True]
    done = 0
    with _serving(server, workers) as (port, reload):

        async def drive() -> None:
            nonlocal done
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    lambda: run_load(
                        f"http://127.0.0.1:{port}/work?ms={args.work_ms}",
                        clients=args.clients,
                        stats=stats,
                        while_=lambda: bool(going),
                    )
                )
                await anyio.sleep(args.pause)
                for _ in range(args.reloads):
                    done += await anyio.to_thread.run_sync(reload)
                    await anyio.sleep(args.pause)
                going.clear()

        anyio.run(drive)
    return stats, done


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
        "--servers",
        default="launcher,uvicorn,hypercorn,uvicorn-fd3",
        help="which of launcher,uvicorn,hypercorn,uvicorn-fd3 (comma-separated)",
    )
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.reloads, args.work_ms, args.pause = 1.0, 2, 20, 0.5
        args.clients = min(args.clients, 8)
    chosen = args.servers.split(",")
    servers = [x for x in ("launcher", "uvicorn", "hypercorn") if x in chosen]
    try:
        print("server      N=1 req/s  N=2 req/s  N=2/N=1")
        for server in servers:
            one, two = (throughput(server, n, args) for n in (1, 2))
            print(f"{server:<10} {one:>10.0f} {two:>10.0f} {two / one:>8.2f}")
        print(
            f"\n{args.reloads} reloads, {args.clients} clients, /work?ms={args.work_ms}"
        )
        print("server       answered  failed  lost  refused  not-200")
        for server in [*servers, *(["uvicorn-fd3"] if "uvicorn-fd3" in chosen else [])]:
            stats = reloads(server, args)
            not_ok = sum(n for status, n in stats.statuses.items() if status != 200)  # noqa: PLR2004
            failed = stats.lost + stats.refused + not_ok
            print(
                f"{server:<12} {stats.answered:>8} {failed:>7} {stats.lost:>5}"
                f" {stats.refused:>8} {not_ok:>8}"
            )
    except RuntimeError as error:
        print(f"bench/workers.py: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
