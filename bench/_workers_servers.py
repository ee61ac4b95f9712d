"""The servers of ``bench/workers.py``: how each is started, reloaded and watched.

Every server serves ``examples/work_app.py`` on 127.0.0.1. Its workers are read
from Linux's /proc, the same way for all of them: the processes under the
server's main process that hold its listening socket, and of those the ones that
accept from it (the socket is in one of their epoll sets, as the launcher's
``--ready accepting`` sees it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from shutdown_scope._launcher._readiness import is_accepting

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
PY = sys.executable
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
LOG_TAIL = 30  # lines of a server's log shown when it ended early

# The servers, in the order of the tables; uvicorn-fd3 runs in the reloads only.
PEERS = ("uvicorn", "hypercorn", "gunicorn", "granian")
SERVERS = ("launcher", *PEERS, "uvicorn-fd3")
# `shutdown-scope serve` under `shutdown-scope run`, one process per generation
# (bench/reload.py's rows: see measure_reloads in bench/workers.py).
SERVE_ROWS = {
    "serve-hypercorn-asyncio": ("--server", "hypercorn", "--backend", "asyncio"),
    "serve-hypercorn-trio": ("--server", "hypercorn", "--backend", "trio"),
    "serve-uvicorn": ("--server", "uvicorn"),
}
# Reloaded with `shutdown-scope reload --control`; the others by their own SIGHUP.
UNDER_LAUNCHER = frozenset({"launcher", "uvicorn-fd3", *SERVE_ROWS})
APP = ("--log-level", "warning", "work_app:app")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def command(
    server: str, workers: int, port: int, control: str, granian: str | None
) -> list[str]:
    """The argv of ``server`` with ``workers`` workers on 127.0.0.1:``port``."""
    listen = ("--listen", f"127.0.0.1:{port}", "--control", control)
    n = str(workers)
    bind = ("--host", "127.0.0.1", "--port", str(port))
    commands = {
        "launcher": [
            *(PY, "-m", "shutdown_scope", "run", *listen, "--workers", n, "--"),
            *(PY, "-m", "shutdown_scope", "serve", "--app-dir", str(EXAMPLES), *APP),
        ],
        "uvicorn-fd3": [
            *(PY, "-m", "shutdown_scope", "run", *listen, "--ready", "accepting"),
            *("--", PY, "-m", "uvicorn", "--fd", "3", *APP),
        ],
        **{
            name: [
                *(PY, "-m", "shutdown_scope", "run", *listen, "--"),
                *(PY, "-m", "shutdown_scope", "serve", "--app-dir", str(EXAMPLES)),
                *(*options, *APP),
            ]
            for name, options in SERVE_ROWS.items()
        },
        "uvicorn": [PY, "-m", "uvicorn", "--workers", n, *bind, *APP],
        "hypercorn": [PY, "-m", "hypercorn", "-w", n, "-b", f"127.0.0.1:{port}", *APP],
        "gunicorn": [
            *(PY, "-m", "gunicorn", "-k", "uvicorn_worker.UvicornWorker", "-w", n),
            *("-b", f"127.0.0.1:{port}", *APP),
        ],
        # --respawn-failed-workers: granian replaces a dead worker only when asked.
        "granian": [
            *(str(granian), "-m", "granian", "--interface", "asgi", "--workers", n),
            *(*bind, "--respawn-failed-workers", *APP),
        ],
    }
    return commands[server]


@dataclasses.dataclass
class Served:
    """A running server: its port, main process and log."""

    name: str
    workers: int
    port: int
    proc: subprocess.Popen[bytes]
    control: str
    log: Path

    def reload(self) -> bool:
        """Reload it; False if the launcher said the reload failed."""
        if self.name in UNDER_LAUNCHER:
            argv = [PY, "-m", "shutdown_scope", "reload", "--control", self.control]
            done = subprocess.run(argv, capture_output=True, check=False, timeout=90)
            return done.returncode == 0
        self.proc.send_signal(signal.SIGHUP)
        return True

    def worker_pids(self) -> dict[int, bool]:
        """Each worker's pid, and whether it accepts connections now."""
        inodes = listening_inodes(self.port)
        found: dict[int, bool] = {}
        for pid in _children(self.proc.pid):
            if _holds(pid, inodes):
                found[pid] = is_accepting(pid, inodes)
        if not found and _holds(self.proc.pid, inodes):  # it serves in-process
            found[self.proc.pid] = is_accepting(self.proc.pid, inodes)
        return found

    def ended_early(self) -> str | None:
        """None while it runs; else its exit code and the end of its log."""
        code = self.proc.poll()
        if code is None:
            return None
        tail = self.log.read_text(errors="replace").splitlines()[-LOG_TAIL:]
        return f"{self.name} exited early with code {code}; its log ends:\n" + (
            "\n".join(tail)
        )


def listening_inodes(port: int) -> frozenset[int]:
    """The inodes of the sockets listening on ``port`` (several with SO_REUSEPORT)."""
    found: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text(encoding="ascii").splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    found.add(int(inode))
    return frozenset(found)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.scandir(f"/proc/{pid}/task"):
            text = Path(task.path, "children").read_text(encoding="ascii")
            found.extend(int(x) for x in text.split())
    return found


def _holds(pid: int, inodes: frozenset[int]) -> bool:
    links = {f"socket:[{inode}]" for inode in inodes}
    with contextlib.suppress(OSError), os.scandir(f"/proc/{pid}/fd") as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                if str(Path(entry.path).readlink()) in links:
                    return True
    return False


@contextlib.contextmanager
def serving(
    server: str, workers: int, granian: str | None, keep_log: Path | None = None
) -> Iterator[Served]:
    """``server`` once all its workers accept; SIGTERM to it at the end.

    Its output goes to a log, copied to ``keep_log`` at the end if given.

    Raises:
        RuntimeError: it exited or did not serve within ``START_TIMEOUT``.
    """
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        control, log = str(Path(tmp, "control")), Path(tmp, "log")
        with log.open("wb") as log_file:
            proc = subprocess.Popen(
                command(server, workers, port, control, granian),
                cwd=EXAMPLES,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        served = Served(server, workers, port, proc, control, log)
        try:
            _wait_until_up(served)
            yield served
        finally:
            # The main process only: each server stops its own workers.
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=STOP_TIMEOUT)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # whatever it left behind
            proc.wait()
            if keep_log is not None:
                shutil.copyfile(log, keep_log)


def _wait_until_up(served: Served) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        ended = served.ended_early()
        if ended is not None:
            raise RuntimeError(ended)
        pids = served.worker_pids()
        if len(pids) >= served.workers and all(pids.values()):
            return
        time.sleep(0.05)
    msg = f"{served.name}: its {served.workers} workers did not accept in time"
    raise RuntimeError(msg)


def granian_python(
    stack: contextlib.ExitStack, *, given: str | None, install: bool
) -> tuple[str | None, str]:
    """A Python that can ``import granian``, and where it comes from.

    This one if it can; else ``given``; else, with ``install``, a new venv in a
    temporary directory (removed with ``stack``) into which pip installs granian
    from the package index. None (and why) when there is none.
    """
    if given is not None:
        return given, f"granian from {given}"
    if importlib.util.find_spec("granian") is not None:
        return PY, "granian from this environment"
    if not install:
        return (
            None,
            "granian: not installed (pass --install-granian or --granian-python)",
        )
    venv = Path(stack.enter_context(tempfile.TemporaryDirectory()), "venv")
    python = str(venv / "bin" / "python")
    try:
        subprocess.run([PY, "-m", "venv", str(venv)], check=True, capture_output=True)
        subprocess.run(
            [python, "-m", "pip", "install", "-q", "granian"],
            check=True,
            capture_output=True,
            timeout=300,
        )
    except (OSError, subprocess.SubprocessError) as error:
        return None, f"granian: could not be installed ({error})"
    version = subprocess.run(
        [python, "-c", "import granian; print(granian.__version__)"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return python, f"granian {version} installed by pip into a temporary venv"
