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
import dataclasses
import functools
import itertools
import os
import queue
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path

import anyio
import anyio.to_thread

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(EXAMPLES))
from http_load import LoadStats, run_load  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _netns import free_port_below_ephemeral  # noqa: E402
from _serve_reloads import ROWS as SERVER_ROWS  # noqa: E402
from _serve_reloads import measure as measure_servers  # noqa: E402
from _serve_reloads import report as report_servers  # noqa: E402
from _table import table_row  # noqa: E402
from h2_reload import (  # noqa: E402
    H2ReloadOutcome,
    measure_h2_reloads,
    report_h2_reloads,
)

APP = EXAMPLES / "hypercorn_app.py"

WORK_MS = 10
TARGET = f"/work?ms={WORK_MS}"
# Far more than a 10 ms request needs: no generation has to cut one short.
DRAIN_TIMEOUT = 10.0
START_TIMEOUT = 30.0
# Past this, a process that has not exited after its SIGTERM is killed.
EXIT_TIMEOUT = DRAIN_TIMEOUT + 20.0
RELOAD_TIMEOUT = 60.0
# After its process has exited, how long to wait for the rest of its output.
OUTPUT_TIMEOUT = 5.0
_READ = 65536

LISTENING_ON = re.compile(r"shutdown-scope: listening on 127\.0\.0\.1:(\d+) ")
APP_LISTENING = re.compile(r"^listening (http://\S+)$")
COUNTS = re.compile(r"lifespan: shutdown; /work requests: (\d+) read, (\d+) answered")
GENERATION_EXIT = re.compile(
    r"shutdown-scope: (generation \d+ \(pid \d+\)) exited: (.*)"
)
GENERATION = re.compile(r"generation \d+ \(pid (\d+)\)")
GENERATION_EXITED = re.compile(r"generation \d+ \(pid (\d+)\) exited")
RETIRED = re.compile(r"; (generation \d+ \(pid \d+\)) sent SIG")


class BenchError(Exception):
    """A server did not start or stop; the message says which, with its output."""

    def __init__(self, name: str, problem: str, lines: list[str]) -> None:
        output = "\n".join(f"  | {line}" for line in lines[-60:])
        super().__init__(f"{name} {problem}; its output (the end):\n{output}")


# -- processes --------------------------------------------------------------------


class Proc:
    """A child process; a thread reads its stdout and stderr by line."""

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        self.killed = False
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._eof = threading.Event()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.rstrip("\n")
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)
        self._eof.set()

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        """Read until a line matches ``pattern``; raise BenchError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                problem = (
                    f"printed no line matching {pattern.pattern!r} in {timeout:g} s"
                )
                raise BenchError(self.name, problem, self.lines) from None
            if line is None:
                self._queue.put(None)  # the next wait sees the end too
                problem = (
                    f"exited with code {self.proc.wait()} before printing a line"
                    f" matching {pattern.pattern!r}"
                )
                raise BenchError(self.name, problem, self.lines)
            found = pattern.search(line)
            if found:
                return found

    def _kill(self) -> None:
        self.killed = True
        self.proc.kill()

    def stop(self) -> int:
        """SIGTERM the process and wait for it (killed after ``EXIT_TIMEOUT``)."""
        guard = threading.Timer(EXIT_TIMEOUT, self._kill)
        guard.start()
        try:
            self.proc.send_signal(signal.SIGTERM)
            code = self.proc.wait()
        finally:
            guard.cancel()
        self._eof.wait(OUTPUT_TIMEOUT)
        return code

    def counts(self) -> list[tuple[int, int]] | None:
        """Each app's ``(read, answered)``; None unless every started app printed it."""
        self._eof.wait(OUTPUT_TIMEOUT)
        found = [COUNTS.search(line) for line in self.lines]
        counts = [(int(m[1]), int(m[2])) for m in found if m]
        started = sum(line == "lifespan: startup" for line in self.lines)
        return counts if len(counts) == started else None

    def close(self) -> None:
        """Kill the process if it still runs; reap it."""
        if self.proc.poll() is None:
            self._kill()
        self.proc.wait()
        self._reader.join(OUTPUT_TIMEOUT)
        assert self.proc.stdout is not None
        if not self._reader.is_alive():
            self.proc.stdout.close()


class Launcher(Proc):
    """The launcher; on close, the generations it has not seen exit are killed too
    (each is a process group of its own, and would hold the output pipe open)."""

    def close(self) -> None:
        """Kill the launcher if it still runs, and what is left of its generations."""
        if self.proc.poll() is None:
            self._kill()
        self.proc.wait()
        started = {m[1] for m in map(GENERATION.search, self.lines) if m}
        exited = {m[1] for m in map(GENERATION_EXITED.search, self.lines) if m}
        for pid in started - exited:
            with contextlib.suppress(OSError):
                os.killpg(int(pid), signal.SIGKILL)
        super().close()


def _app_argv(backend: str) -> list[str]:
    return [
        sys.executable,
        str(APP),
        "--backend",
        backend,
        "--drain-timeout",
        f"{DRAIN_TIMEOUT:g}",
    ]


def _port_below_ephemeral() -> int:
    """A free TCP port on 127.0.0.1 below the ephemeral range (see the docstring)."""
    try:
        return free_port_below_ephemeral()
    except OSError as error:
        name, problem = "naive", f"found {error}"
        raise BenchError(name, problem, []) from None


# -- the load ------------------------------------------------------------------------


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


async def _load(port: int, clients: int, stats: Load, going: list[bool]) -> None:
    """Run ``clients`` clients on 127.0.0.1:``port`` while ``going`` is not empty."""
    url = f"http://127.0.0.1:{port}{TARGET}"
    await run_load(url, clients=clients, stats=stats, while_=lambda: bool(going))


# -- the two methods --------------------------------------------------------------


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


@dataclasses.dataclass(frozen=True)
class Plan:
    """How much load and how many reloads."""

    backend: str
    clients: int
    reloads: int
    warmup: float
    pause: float


def _ask_reload(control: str) -> tuple[bool, str]:
    result = subprocess.run(
        [sys.executable, "-m", "shutdown_scope", "reload", "--control", control],
        capture_output=True,
        text=True,
        timeout=RELOAD_TIMEOUT,
        check=False,
    )
    text = (result.stderr or result.stdout).strip().removeprefix("shutdown-scope: ")
    return result.returncode == 0, text or f"exit code {result.returncode}"


def _reload_launcher(launcher: Launcher, control: str) -> Reload:
    """One reload through the control socket; then wait for the old one's exit."""
    started = time.monotonic()
    ok, text = _ask_reload(control)
    seconds = time.monotonic() - started
    retired = RETIRED.search(text)
    if ok and retired:
        exited = re.compile(re.escape(f"shutdown-scope: {retired[1]} exited"))
        launcher.wait_for(exited, EXIT_TIMEOUT)
    ok = ok and retired is not None
    return Reload(ok=ok, started=started, seconds=seconds, text=text)


def _start_launcher(
    plan: Plan, stack: contextlib.ExitStack
) -> tuple[Launcher, str, int]:
    """The launcher, ready: it, its control socket's path and its port."""
    control = str(Path(stack.enter_context(tempfile.TemporaryDirectory())) / "ctl")
    launcher = Launcher(
        "launcher",
        [
            sys.executable,
            "-m",
            "shutdown_scope",
            "run",
            "--listen",
            "127.0.0.1:0",
            "--control",
            control,
            "--",
            *_app_argv(plan.backend),
        ],
    )
    stack.callback(launcher.close)
    port = int(launcher.wait_for(LISTENING_ON, START_TIMEOUT)[1])
    launcher.wait_for(re.compile(r"generation 1 \(pid \d+\) ready"), START_TIMEOUT)
    return launcher, control, port


async def measure_launcher(plan: Plan, stack: contextlib.ExitStack) -> Outcome:
    """The launcher method: N reloads through ``reload --control`` under load."""
    launcher, control, port = _start_launcher(plan, stack)
    stats, going = Load(), [True]
    reloads: list[Reload] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(_load, port, plan.clients, stats, going)
        await anyio.sleep(plan.warmup)
        start = time.monotonic()
        for number in range(1, plan.reloads + 1):
            reload = await anyio.to_thread.run_sync(_reload_launcher, launcher, control)
            reloads.append(reload)
            if not reload.ok:
                print(f"  launcher: reload {number} failed: {reload.text}", flush=True)
            await anyio.sleep(plan.pause)
        end = time.monotonic()
        going.clear()
    code = await anyio.to_thread.run_sync(launcher.stop)
    notes = [
        f"launcher: {m[1]} exited: {m[2]}"
        for m in map(GENERATION_EXIT.search, launcher.lines)
        if m and m[2] != "exit code 0"
    ]
    return Outcome(
        name="launcher",
        stats=stats,
        window=(start, end),
        reloads=reloads,
        exit_codes=[code],
        killed=launcher.killed,
        counts=launcher.counts(),
        notes=notes,
    )


async def measure_launcher_h2(
    plan: Plan, stack: contextlib.ExitStack
) -> H2ReloadOutcome:
    """The launcher method under HTTP/2 load (``bench/h2_reload.py``)."""
    launcher, control, port = _start_launcher(plan, stack)
    stats, reloads = await measure_h2_reloads(
        port,
        reloads=plan.reloads,
        warmup=plan.warmup,
        pause=plan.pause,
        reload_once=functools.partial(_reload_launcher, launcher, control),
    )
    code = await anyio.to_thread.run_sync(launcher.stop)
    return H2ReloadOutcome(
        stats=stats,
        reloads_ok=sum(r.ok for r in reloads),
        reloads=len(reloads),
        exit_code=code,
        killed=launcher.killed,
        counts=launcher.counts(),
    )


class _Naive:
    """One app process at a time on a fixed port; a restart replaces it."""

    def __init__(self, plan: Plan, stack: contextlib.ExitStack) -> None:
        self.backend = plan.backend
        self.port = _port_below_ephemeral()
        self.stack = stack
        self.done: list[Proc] = []
        self.exit_codes: list[int] = []
        self.current = self._start()

    def _start(self) -> Proc:
        argv = [*_app_argv(self.backend), "--bind", f"127.0.0.1:{self.port}"]
        proc = Proc(f"naive app on port {self.port}", argv)
        self.stack.callback(proc.close)
        proc.wait_for(APP_LISTENING, START_TIMEOUT)
        return proc

    def restart(self) -> Reload:
        """SIGTERM, wait for the exit, start a new one and wait until it listens."""
        started = time.monotonic()
        self.exit_codes.append(self.current.stop())
        self.done.append(self.current)
        self.current = self._start()
        seconds = time.monotonic() - started
        return Reload(ok=True, started=started, seconds=seconds, text="")

    def stop(self) -> None:
        """Stop the last one."""
        self.exit_codes.append(self.current.stop())
        self.done.append(self.current)


async def measure_naive(plan: Plan, stack: contextlib.ExitStack) -> Outcome:
    """The naive method: N times SIGTERM and start a new process, under load."""
    naive = _Naive(plan, stack)
    stats, going = Load(), [True]
    reloads: list[Reload] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(_load, naive.port, plan.clients, stats, going)
        await anyio.sleep(plan.warmup)
        start = time.monotonic()
        for _ in range(plan.reloads):
            reloads.append(await anyio.to_thread.run_sync(naive.restart))
            await anyio.sleep(plan.pause)
        end = time.monotonic()
        going.clear()
    await anyio.to_thread.run_sync(naive.stop)
    counts: list[tuple[int, int]] | None = []
    for proc in naive.done:
        mine = proc.counts()
        counts = None if mine is None or counts is None else counts + mine
    return Outcome(
        name="naive",
        stats=stats,
        window=(start, end),
        reloads=reloads,
        exit_codes=naive.exit_codes,
        killed=any(proc.killed for proc in naive.done),
        counts=counts,
    )


# -- the report ----------------------------------------------------------------------

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
