"""The two methods of bench/reload.py: launcher reloads and naive restarts.

Each ``measure_*`` runs the load of ``examples/http_load.py`` on one server
while it reloads it ``Plan.reloads`` times, and returns what happened.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import anyio.to_thread

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from _reload_children import (
    APP_LISTENING,
    EXIT_TIMEOUT,
    LISTENING_ON,
    START_TIMEOUT,
    Launcher,
    Proc,
    app_argv,
    port_below_ephemeral,
)
from _reload_outcome import Load, Outcome, Reload
from h2_reload import H2ReloadOutcome, measure_h2_reloads
from http_load import run_load

__all__ = [
    "TARGET",
    "WORK_MS",
    "Plan",
    "measure_launcher",
    "measure_launcher_h2",
    "measure_naive",
]

WORK_MS = 10
TARGET = f"/work?ms={WORK_MS}"
RELOAD_TIMEOUT = 60.0

GENERATION_EXIT = re.compile(
    r"shutdown-scope: (generation \d+ \(pid \d+\)) exited: (.*)"
)
RETIRED = re.compile(r"; (generation \d+ \(pid \d+\)) sent SIG")


@dataclasses.dataclass(frozen=True)
class Plan:
    """How much load and how many reloads."""

    backend: str
    clients: int
    reloads: int
    warmup: float
    pause: float


async def _load(port: int, clients: int, stats: Load, going: list[bool]) -> None:
    """Run ``clients`` clients on 127.0.0.1:``port`` while ``going`` is not empty."""
    url = f"http://127.0.0.1:{port}{TARGET}"
    await run_load(url, clients=clients, stats=stats, while_=lambda: bool(going))


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
            *app_argv(plan.backend),
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
        self.port = port_below_ephemeral()
        self.stack = stack
        self.done: list[Proc] = []
        self.exit_codes: list[int] = []
        self.current = self._start()

    def _start(self) -> Proc:
        argv = [*app_argv(self.backend), "--bind", f"127.0.0.1:{self.port}"]
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
