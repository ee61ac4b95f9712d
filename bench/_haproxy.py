"""HAProxy from examples/deploy/haproxy.cfg, and what its stats socket says.

``open_haproxy`` runs Debian's ``haproxy`` in the foreground with the template's
``"${NAME}"`` strings set in its environment; ``HAProxy.statuses()`` asks the
stats socket (``show stat``, CSV) for each server's state: ``UP``, ``UP 1/2``
(one check failed, still UP), ``DOWN``, ``MAINT``...
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import anyio
import anyio.abc

__all__ = ["BACKEND", "CONFIG", "HAProxy", "find_haproxy", "open_haproxy"]

CONFIG = Path(__file__).resolve().parent.parent / "examples" / "deploy" / "haproxy.cfg"
BACKEND = "replicas"
SLOTS = 6  # REPLICA1..REPLICA6 in the template
START_TIMEOUT = 10.0


class HAProxyError(Exception):
    """HAProxy did not start or its stats socket did not answer."""


def find_haproxy() -> str | None:
    """The ``haproxy`` program: on PATH, or in /usr/sbin (not on a user's PATH)."""
    found = shutil.which("haproxy")
    if found is None and os.access("/usr/sbin/haproxy", os.X_OK):
        found = "/usr/sbin/haproxy"
    return found


@dataclasses.dataclass
class HAProxy:
    """A running HAProxy: its process, stats socket and log file."""

    process: anyio.abc.Process
    frontend: str  # HOST:PORT
    stats_socket: Path
    log: Path

    async def command(self, line: str) -> str:
        """Send one stats-socket command; its whole answer."""
        async with await anyio.connect_unix(self.stats_socket) as stream:
            await stream.send(line.encode() + b"\n")
            chunks = []
            with contextlib.suppress(anyio.EndOfStream):
                while True:
                    chunks.append(await stream.receive())
        return b"".join(chunks).decode()

    async def servers(self) -> dict[str, dict[str, str]]:
        """Each server of the backend and its ``show stat`` fields, by name."""
        text = await self.command("show stat")
        rows = csv.DictReader(text.removeprefix("# ").splitlines())
        return {
            row["svname"]: row
            for row in rows
            if row["pxname"] == BACKEND and row["svname"] not in {"FRONTEND", "BACKEND"}
        }

    async def statuses(self) -> dict[str, str]:
        """Each server of the backend and its status."""
        return {name: row["status"] for name, row in (await self.servers()).items()}


def is_up(status: str | None) -> bool:
    """``UP``, or ``UP 1/2`` (still UP, one check failed)."""
    return status is not None and status.split()[0] == "UP"


def is_down(status: str | None) -> bool:
    """``DOWN`` (or ``DOWN 1/2``: still DOWN, one check passed)."""
    return status is not None and status.split()[0] == "DOWN"


@contextlib.asynccontextmanager
async def open_haproxy(
    program: str,
    *,
    frontend: str,
    replicas: Sequence[str],
    check_path: str,
    redispatch: bool,
    workdir: Path,
) -> AsyncIterator[HAProxy]:
    """Run HAProxy on ``frontend`` with the ``replicas`` (6 ``HOST:PORT``);
    ``redispatch``: a refused connection is retried on another server."""
    if len(replicas) != SLOTS:
        msg = f"the template has {SLOTS} replica slots, not {len(replicas)}"
        raise ValueError(msg)
    stats_socket = workdir / "haproxy.sock"
    env = {
        **os.environ,
        "FRONTEND": frontend,
        "STATS_SOCKET": str(stats_socket),
        "CHECK_PATH": check_path,
    }
    env.update({f"REPLICA{n}": addr for n, addr in enumerate(replicas, 1)})
    env.pop("REDISPATCH", None)
    if redispatch:
        env["REDISPATCH"] = "1"
    log = workdir / "haproxy.log"
    with log.open("wb") as out:
        process = await anyio.open_process(
            [program, "-db", "-f", str(CONFIG)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    haproxy = HAProxy(process, frontend, stats_socket, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            with contextlib.suppress(OSError):
                await haproxy.statuses()
                break
            if process.returncode is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:]
                msg = f"HAProxy did not start ({program} -db -f {CONFIG}):\n{tail}"
                raise HAProxyError(msg)
            await anyio.sleep(0.02)
        yield haproxy
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        with anyio.move_on_after(5, shield=True):
            await process.wait()
        if process.returncode is None:
            process.kill()
            with anyio.CancelScope(shield=True):
                await process.wait()
