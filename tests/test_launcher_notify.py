"""The launcher's notify channels, with real processes and sockets: whose
notifications count (``--notify-access``), and the relay to its own supervisor,
which never blocks the launcher and never gives up."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from _spawn import Child, Launcher, child_pids, fill_queue
from test_launcher import LAUNCHED, ask, launcher, port_of, reload_command

pytestmark = pytest.mark.subprocess


@contextlib.contextmanager
def supervisor_socket() -> Iterator[tuple[str, socket.socket]]:
    """A datagram socket playing systemd's NOTIFY_SOCKET: ``@name`` and its socket."""
    name = f"shutdown-scope-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(f"\0{name}")
        yield f"@{name}", sock


def heard(sock: socket.socket) -> list[bytes]:
    """The datagrams waiting on ``sock``."""
    sock.setblocking(False)  # noqa: FBT003 -- the stdlib signature
    datagrams = []
    with contextlib.suppress(BlockingIOError):
        while True:
            datagrams.append(sock.recv(65536))
    return datagrams


def pid_after(child: Child, marker: str) -> int:
    """The number after ``marker`` on the first line that has it."""
    match = re.search(rf"{re.escape(marker)}(\d+)", child.wait_for(marker))
    assert match is not None
    return int(match.group(1))


# -- whose notifications count ----------------------------------------------------


@pytest.mark.parametrize(
    ("behaviour", "access", "took_over"),
    [
        ("helperready", "main", False),  # the helper's READY=1 is dropped
        ("helperready", "all", True),  # ... unless every process may notify
        ("mainpid", "main", True),  # MAINPID= named the worker: its READY=1 counts
        ("launchermainpid", "main", False),  # MAINPID= outside the generation
    ],
)
def test_only_the_main_process_can_make_a_generation_ready(
    tmp_path: Path, behaviour: str, access: str, *, took_over: bool
) -> None:
    control = str(tmp_path / "control")
    options = ["--listen", "127.0.0.1:0", "--control", control]
    if access != "main":  # the default
        options += ["--notify-access", access]
    with launcher(*options, behaviour=f"serve,{behaviour}") as child:
        port = port_of(child)
        child.wait_for(") ready")
        result = reload_command("--control", control)
        sender = pid_after(child, "helper " if "helper" in behaviour else "worker ")
        if took_over:
            assert result.returncode == 0, result.stderr
            child.wait_for("gen 1 exiting")
        else:
            assert result.returncode == 1, result.stderr
            assert "generation 2 (pid" in result.stderr
            assert "exited before it was ready: exit code 3" in result.stderr
            assert f"READY=1 from pid {sender} was dropped" in result.stderr
            assert ask(port).startswith("gen 1 ")
            assert "gen 1 got SIGTERM" not in child.output
        child.send(signal.SIGTERM)
        code = child.finish()
    if behaviour == "helperready" and took_over:
        # --notify-access all: the helper retired generation 1, then the app failed.
        assert code == 3
    else:
        assert code == 0


def test_a_process_outside_the_generation_cannot_make_it_ready(
    tmp_path: Path,
) -> None:
    control = str(tmp_path / "control")
    options = ("--listen", "127.0.0.1:0", "--control", control)
    with launcher(*options, behaviour="serve,hang") as child:
        port = port_of(child)
        child.wait_for(") ready")
        with Child("-m", "shutdown_scope", "reload", "--control", control) as asking:
            successor = pid_after(child, "gen 2 pid ")
            environ = Path(f"/proc/{successor}/environ").read_bytes().split(b"\0")
            (path,) = [x[14:] for x in environ if x.startswith(b"NOTIFY_SOCKET=")]
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as intruder:
                intruder.sendto(b"READY=1", path)
            # Read after that READY=1: generation 2 stops without being ready.
            os.kill(successor, signal.SIGUSR1)
            assert asking.finish() == 1
        assert f"READY=1 from pid {os.getpid()} was dropped" in asking.output
        assert ask(port).startswith("gen 1 ")
        child.send(signal.SIGTERM)
        assert child.finish() == 0
