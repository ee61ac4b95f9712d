"""The replicas of bench/fleet.py: their command lines, start, readiness, stop.

A replica's fate is read from HAProxy's stats socket (UP, DOWN) and from /proc
(still running, or exited and not yet reaped), never from its log.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from _haproxy import HAProxy, is_down, is_up
from _netns import Place

__all__ = [
    "CANCEL_TIMEOUT",
    "DRAIN_TIMEOUT",
    "BenchError",
    "Replica",
    "kill_tree",
    "replica_argv",
    "start_replica",
    "stop_replica",
    "wait_slots_down",
    "wait_up",
]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DRAIN_TIMEOUT = 5.0
CANCEL_TIMEOUT = 1.0
START_TIMEOUT = 30.0
POLL = 0.01


class BenchError(Exception):
    """HAProxy or a replica did not start or stop; the message says which."""


def replica_argv(server: str, place: Place, *, announce_delay: float) -> list[str]:
    """The command line of one replica, entering its network namespace."""
    if server == "uvicorn":
        return [
            *place.prefix,
            *(sys.executable, "-m", "uvicorn", "--host", place.host),
            *("--port", str(place.port), "--app-dir", str(EXAMPLES)),
            *("--no-access-log", "--timeout-graceful-shutdown", f"{DRAIN_TIMEOUT:g}"),
            "work_app:app",
        ]
    grace = announce_delay + DRAIN_TIMEOUT + CANCEL_TIMEOUT + 2
    return [
        *place.prefix,
        *(sys.executable, "-m", "shutdown_scope", "run", "--listen", place.address),
        *("--grace-period", f"{grace:g}", "--"),
        *(sys.executable, "-m", "shutdown_scope", "serve", "--app-dir", str(EXAMPLES)),
        *("--factory", "hypercorn_app:App", "--readiness-path", "/readyz"),
        *("--announce-delay", f"{announce_delay:g}"),
        *("--drain-timeout", f"{DRAIN_TIMEOUT:g}"),
        *("--cancel-timeout", f"{CANCEL_TIMEOUT:g}"),
    ]


def _still_runs(pid: int) -> bool:
    """Not exited: present in /proc and not a zombie (exited, not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@dataclasses.dataclass
class Replica:
    """One replica: HAProxy's server name for it, its process and its fate."""

    name: str  # replicaN, as in haproxy.cfg
    role: str  # "old" or "new"
    place: Place
    process: anyio.abc.Process
    log: Path
    term_at: float | None = None  # time.monotonic() of its SIGTERM
    down_at: float | None = None  # first `show stat` answer saying DOWN after it
    exited_at: float | None = None
    down_while_running: bool | None = None
    exit_code: int | None = None
    # HAProxy's counters for it at the end: 2xx answers it gave, connection
    # errors, and retries.
    counters: dict[str, int] = dataclasses.field(default_factory=dict)

    def tail(self) -> str:
        """The end of its output, for an error message."""
        text = self.log.read_text(errors="replace")[-3000:]
        return "\n".join(f"  | {line}" for line in text.splitlines())

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe, times in seconds after the SIGTERM."""

        def after(at: float | None) -> float | None:
            if at is None or self.term_at is None:
                return None
            return round(at - self.term_at, 4)

        return {
            "name": self.name,
            "role": self.role,
            "address": self.place.address,
            "exit_code": self.exit_code,
            "down_while_running": self.down_while_running,
            "down_after": after(self.down_at),
            "exit_after": after(self.exited_at),
            "haproxy": self.counters,
        }


async def start_replica(
    server: str,
    name: str,
    *,
    role: str,
    place: Place,
    announce_delay: float,
    workdir: Path,
) -> Replica:
    """Start one replica; its output goes to a file of its own."""
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        process = await anyio.open_process(
            replica_argv(server, place, announce_delay=announce_delay),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    return Replica(name, role, place, process, log)


async def wait_up(haproxy: HAProxy, replicas: list[Replica]) -> None:
    """Until HAProxy says every one of ``replicas`` is UP."""
    with anyio.move_on_after(START_TIMEOUT) as scope:
        while True:
            statuses = await haproxy.statuses()
            if all(is_up(statuses.get(r.name)) for r in replicas):
                return
            for replica in replicas:
                if replica.process.returncode is not None:
                    msg = f"{replica.name} exited before it was UP:\n{replica.tail()}"
                    raise BenchError(msg)
            await anyio.sleep(POLL)
    if scope.cancelled_caught:
        late = [r for r in replicas if not is_up(statuses.get(r.name))]
        tails = "\n".join(f"{r.name}: {statuses.get(r.name)}\n{r.tail()}" for r in late)
        msg = f"not UP in HAProxy after {START_TIMEOUT:g} s:\n{tails}"
        raise BenchError(msg)


async def wait_slots_down(haproxy: HAProxy, slots: list[str]) -> None:
    """Until HAProxy has found the new replicas' addresses DOWN (nothing there yet):
    at its start it counts every server UP until a check fails."""
    with anyio.move_on_after(START_TIMEOUT):
        while True:
            statuses = await haproxy.statuses()
            if all(is_down(statuses.get(slot)) for slot in slots):
                return
            await anyio.sleep(POLL)
    msg = f"HAProxy did not mark the empty slots DOWN: {statuses}"
    raise BenchError(msg)


async def stop_replica(
    haproxy: HAProxy, replica: Replica, *, kill_after: float
) -> None:
    """SIGTERM; watch HAProxy's view of it until it is DOWN and the process is gone."""
    replica.term_at = time.monotonic()
    replica.process.send_signal(signal.SIGTERM)

    async def wait_exit() -> None:
        replica.exit_code = await replica.process.wait()
        replica.exited_at = time.monotonic()

    with anyio.move_on_after(kill_after) as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_exit)
            while replica.down_at is None:
                if is_down((await haproxy.statuses()).get(replica.name)):
                    replica.down_at = time.monotonic()
                    # Checked after HAProxy answered DOWN: if it still runs now,
                    # it did when HAProxy marked it DOWN.
                    replica.down_while_running = (
                        replica.process.returncode is None
                        and _still_runs(replica.process.pid)
                    )
                await anyio.sleep(POLL)
    if scope.cancelled_caught:
        replica.process.kill()
        problem = "did not exit, or HAProxy never said DOWN"
        msg = f"{replica.name} {problem}:\n{replica.tail()}"
        raise BenchError(msg)


def kill_tree(pid: int) -> None:
    """SIGKILL a process and its descendants (the launcher's children lead
    process groups of their own); only when something went wrong."""
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        for child in map(int, children):
            kill_tree(child)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
