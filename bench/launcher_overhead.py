"""What the launcher adds to an app's start and stop, beside the app alone.

``python bench/launcher_overhead.py [--quick] [--repeat N] [--no-peers]
[--breakdown]``
starts each program N times (10; ``--quick``: 2), the programs taking turns so
a burst of load on the machine falls on all alike, and measures:

* **start**: from just before ``Popen`` to the first HTTP 200 of
  ``GET /work?ms=0``, polled every 2 ms (a refused connection is tried again
  2 ms later; a connection the kernel accepted waits for its answer).
* **stop**: with the app idle (no connection open) 100 ms after that answer,
  from SIGTERM to the process's exit (``waitpid``).

The programs, all serving ``examples/work_app.py``:

* **app**: ``python -m shutdown_scope serve work_app:app --bind``: the app alone.
* **launcher**: ``python -m shutdown_scope run --listen ADDR -- python -m
  shutdown_scope serve work_app:app``: the same app as the launcher's child,
  serving the socket the launcher bound (LISTEN_FDS).
* **uvicorn**, **hypercorn** (reference, unless ``--no-peers``): the bare CLIs.

``--breakdown`` then times the parts of the launcher's start (medians): a bare
interpreter's start and exit, an interpreter importing what the launcher runs
before it starts its child (the rest, its supervisor, is imported while the
child starts), and the launcher's exec to its child's fork (seen in /proc). The
child then starts as the app alone does, so the launcher adds about its
exec-to-fork.

Before measuring, the package and the example are byte-compiled (as ``pip
install`` does): under ``PYTHONDONTWRITEBYTECODE`` every start would otherwise
compile their sources again, and the launcher, with more modules, pay more.

Goals (issue 15): the launcher's start within 20 ms of the app alone, its
SIGTERM-to-exit within 5 ms, comparing medians. Timings vary with the machine's
load; the bench is a measurement, it exits 0 whether or not a goal is met.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import importlib.util
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import shutdown_scope

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
START_GOAL_MS = 20.0
STOP_GOAL_MS = 5.0
POLL_S = 0.002
IDLE_S = 0.1  # after the first answer: the app settles, its connection closed
START_TIMEOUT_S = 30.0
START_HEAD = "start_ms median (min-max)"
STOP_HEAD = "stop_ms median (min-max)"
REQUEST = b"GET /work?ms=0 HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"

SERVE = [sys.executable, "-m", "shutdown_scope", "serve", "work_app:app"]


def _app(port: int) -> list[str]:
    return [*SERVE, "--app-dir", str(EXAMPLES), "--bind", f"127.0.0.1:{port}"]


def _launcher(port: int) -> list[str]:
    run = [sys.executable, "-m", "shutdown_scope", "run"]
    return [
        *run,
        "--listen",
        f"127.0.0.1:{port}",
        "--",
        *SERVE,
        "--app-dir",
        str(EXAMPLES),
    ]


def _uvicorn(port: int) -> list[str]:
    uvicorn = [sys.executable, "-m", "uvicorn", "work_app:app"]
    return [
        *uvicorn,
        "--app-dir",
        str(EXAMPLES),
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]


def _hypercorn(port: int) -> list[str]:
    hypercorn = [sys.executable, "-m", "hypercorn", f"{EXAMPLES / 'work_app.py'}:app"]
    return [*hypercorn, "--bind", f"127.0.0.1:{port}"]


BREAKDOWN = {
    "python -c pass (interpreter start and exit)": [sys.executable, "-c", "pass"],
    "python -c 'import <launcher before child>'": [
        sys.executable,
        "-c",
        "import shutdown_scope._launcher._cli",
    ],
}

PROGRAMS = {
    "app": _app,
    "launcher": _launcher,
    "uvicorn": _uvicorn,
    "hypercorn": _hypercorn,
}


@dataclass
class Samples:
    """One program's trials, in ms."""

    name: str
    start: list[float] = field(default_factory=list)
    stop: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def free_port() -> int:
    """A port free now (the program binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answered_200(port: int) -> bool | None:
    """One GET: True on a 200, False on another answer, None if refused."""
    try:
        conn = socket.create_connection(("127.0.0.1", port), timeout=START_TIMEOUT_S)
    except ConnectionRefusedError:
        return None
    with conn:
        try:
            conn.sendall(REQUEST)
            head = conn.recv(64)
        except (ConnectionResetError, BrokenPipeError):
            return None
    if not head:
        return None  # closed unanswered: a server still starting or stopping
    return head.startswith(b"HTTP/1.1 200")


def _first_200(proc: subprocess.Popen[bytes], port: int, started: float) -> str:
    """Poll until the first 200; return why not ("" once answered)."""
    while True:
        answer = _answered_200(port)
        if answer is not None:
            return "" if answer else "answered, not with 200"
        if proc.poll() is not None:
            return f"exited {proc.returncode} before answering"
        if time.perf_counter() - started > START_TIMEOUT_S:
            return f"no answer within {START_TIMEOUT_S:g} s"
        time.sleep(POLL_S)


def _exited_within(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait for the exit, woken by it (a pidfd), or give up after ``timeout``.

    Not ``Popen.wait(timeout)``: it polls with sleeps doubling up to 50 ms, which
    would round every stop time up to its next poll (0.5, 1.5, 3.5 ... 63.5 ms).
    """
    pidfd = os.pidfd_open(proc.pid)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if not poller.poll(timeout * 1000):
            return False
    finally:
        os.close(pidfd)
    proc.wait()  # reaps it: already exited
    return True


def trial(argv: list[str], port: int) -> tuple[float, float] | str:
    """Start ``argv``; its first 200 and SIGTERM-to-exit in ms, or why not."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        failure = _first_200(proc, port, started)
        if failure:
            return failure
        start_ms = (time.perf_counter() - started) * 1000
        time.sleep(IDLE_S)
        stopping = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        if not _exited_within(proc, START_TIMEOUT_S):
            return f"still running {START_TIMEOUT_S:g} s after SIGTERM"
        return start_ms, (time.perf_counter() - stopping) * 1000
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def measure(names: list[str], repeat: int) -> dict[str, Samples]:
    """Every program once per round, ``repeat`` rounds."""
    samples = {name: Samples(name) for name in names}
    for _ in range(repeat):
        for name in names:
            port = free_port()
            result = trial(PROGRAMS[name](port), port)
            if isinstance(result, str):
                samples[name].failures.append(result)
                continue
            samples[name].start.append(result[0])
            samples[name].stop.append(result[1])
    return samples


def _cell(values: list[float]) -> str:
    if not values:
        return f"{'-':>24}"
    spread = f"{min(values):.0f}-{max(values):.0f}"
    return f"{statistics.median(values):>9.1f} ({spread:>12})"


def _goal(samples: dict[str, Samples], what: str, goal: float, label: str) -> str:
    text = f"goal: launcher {label} within {goal:g} ms of the app alone"
    ours: list[float] = getattr(samples["launcher"], what)
    alone: list[float] = getattr(samples["app"], what)
    if not ours or not alone:
        return f"{text}: NOT MEASURED"
    difference = statistics.median(ours) - statistics.median(alone)
    verdict = "met" if difference <= goal else "NOT MET"
    return f"{text}: {verdict} ({difference:+.1f} ms)"


def report(samples: dict[str, Samples]) -> None:
    """Print the table (median and min-max, ms), the differences and the goals."""
    print(f"{'program':<10} {'runs':>4} {START_HEAD:>24} {STOP_HEAD:>24}")
    for s in samples.values():
        print(f"{s.name:<10} {len(s.start):>4} {_cell(s.start)} {_cell(s.stop)}")
    for s in samples.values():
        for failure in s.failures:
            print(f"failed: {s.name}: {failure}")
    app, ours = samples["app"], samples["launcher"]
    for what in ("start", "stop"):
        a: list[float] = getattr(app, what)
        b: list[float] = getattr(ours, what)
        if a and b:
            difference = statistics.median(b) - statistics.median(a)
            print(f"launcher - app ({what}): {difference:+.1f} ms")
    print(_goal(samples, "start", START_GOAL_MS, "start"))
    print(_goal(samples, "stop", STOP_GOAL_MS, "SIGTERM->exit"))


def _run_ms(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, stdin=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - started) * 1000


def _spawn_ms(port: int) -> float | None:
    """Launcher exec to its child's fork, seen in /proc (polled every 0.5 ms)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        _launcher(port),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    try:
        while proc.poll() is None and time.perf_counter() - started < START_TIMEOUT_S:
            with contextlib.suppress(OSError):
                if children.read_text().strip():
                    return (time.perf_counter() - started) * 1000
            time.sleep(0.0005)
        return None
    finally:
        proc.send_signal(signal.SIGTERM)
        if not _exited_within(proc, START_TIMEOUT_S):
            proc.kill()
            proc.wait()


def breakdown(repeat: int) -> None:
    """Where the launcher's start goes: medians of its parts, alternating."""
    parts: dict[str, list[float]] = {name: [] for name in BREAKDOWN}
    spawn: list[float] = []
    for _ in range(repeat):
        for name, argv in BREAKDOWN.items():
            parts[name].append(_run_ms(argv))
        ms = _spawn_ms(free_port())
        if ms is not None:
            spawn.append(ms)
    print("breakdown (median ms):")
    for name, values in parts.items():
        print(f"  {name:<44} {statistics.median(values):7.1f}")
    if spawn:
        name = "launcher: exec to its child forked"
        print(f"  {name:<44} {statistics.median(spawn):7.1f}")


def main() -> int:
    """Parse the options, measure the programs in turns, print the table and goals."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 runs of each")
    parser.add_argument("--repeat", type=int, default=10, help="runs of each program")
    parser.add_argument(
        "--breakdown", action="store_true", help="then time the launcher's start parts"
    )
    parser.add_argument(
        "--no-peers", action="store_true", help="skip uvicorn, hypercorn"
    )
    args = parser.parse_args()
    repeat = 2 if args.quick else args.repeat
    for tree in (Path(shutdown_scope.__file__).parent, EXAMPLES):
        compileall.compile_dir(tree, quiet=1)
    names = ["app", "launcher"]
    if not args.no_peers:
        names += [n for n in ("uvicorn", "hypercorn") if importlib.util.find_spec(n)]
    samples = measure(names, repeat)
    report(samples)
    if args.breakdown:
        breakdown(repeat)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
