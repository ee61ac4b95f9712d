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
from test_launcher import (
    LAUNCHED,
    _in_new_pid_namespace,
    ask,
    launcher,
    port_of,
    reload_command,
    wait_for_all,
)

from shutdown_scope._launcher import main
from shutdown_scope._launcher._parser import command_parser

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
    sock.setblocking(False)
    datagrams = []
    with contextlib.suppress(BlockingIOError):
        while True:
            datagrams.append(sock.recv(65536))
    return datagrams


def pid_after(child: Child, marker: str) -> int:
    """The number after ``marker`` in the output (read up to it if need be)."""
    wait_for_all(child, marker)
    match = re.search(rf"{re.escape(marker)}(\d+)", child.output)
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
        if took_over:
            assert result.returncode == 0, result.stderr
            wait_for_all(child, "gen 1 exiting")
        else:
            assert result.returncode == 1, result.stderr
            assert "generation 2 (pid" in result.stderr
            assert "exited before it was ready: exit code 3" in result.stderr
            assert ask(port).startswith("gen 1 ")
            assert "gen 1 got SIGTERM" not in child.output
        if behaviour == "helperready" and took_over:
            # --notify-access all: the helper retired generation 1, then the app
            # failed: the outage that NotifyAccess=main prevents.
            assert child.finish() == 3
        else:
            child.send(signal.SIGTERM)
            assert child.finish() == 0
    if not took_over:
        sender = pid_after(child, "helper " if "helper" in behaviour else "worker ")
        assert f"READY=1 from pid {sender} was dropped" in result.stderr


def test_notify_access_takes_main_or_all(capsys: pytest.CaptureFixture[str]) -> None:
    assert command_parser().parse_args(["run"]).notify_access == "main"
    with pytest.raises(SystemExit) as exited:
        main(["run", "--notify-access", "any", "--", "true"])
    assert exited.value.code == 2
    assert "invalid choice: 'any' (choose from" in capsys.readouterr().err


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
            os.kill(successor, signal.SIGTERM)
            assert asking.finish() == 1
        assert f"READY=1 from pid {os.getpid()} was dropped" in asking.output
        assert ask(port).startswith("gen 1 ")
        child.send(signal.SIGTERM)
        assert child.finish() == 0


# -- the relay to the launcher's own supervisor -------------------------------------


def test_a_supervisor_that_reads_nothing_never_stops_the_launcher() -> None:
    """With systemd's queue full, the launcher still forwards, reaps and kills."""
    with supervisor_socket() as (address, sock):
        fill_queue(sock.getsockname())
        command = ("-m", "shutdown_scope", "run", "--grace-period", "1", "--")
        env = {"NOTIFY_SOCKET": address}
        with Launcher(*command, sys.executable, LAUNCHED, "ignore", env=env) as child:
            child.wait_for(") ready")  # READY=1 for the supervisor: dropped
            child.send(signal.SIGTERM)  # STOPPING=1: dropped too
            child.wait_for("gen 1 got SIGTERM")
            assert child.finish() == 128 + signal.SIGKILL  # at the grace period
        assert set(heard(sock)) == {b"FILLER=1"}
    assert "still running after its grace period: SIGKILL" in child.output


def test_a_supervisor_socket_that_comes_back_hears_the_next_messages() -> None:
    """A failed send (systemd re-executing, say) never turns the relay off."""
    name = f"shutdown-scope-test-{uuid.uuid4().hex}"
    command = ("-m", "shutdown_scope", "run", "--", sys.executable, LAUNCHED, "serve")
    with Launcher(*command, env={"NOTIFY_SOCKET": f"@{name}"}) as child:
        child.wait_for("cannot notify the launcher's supervisor")  # READY=1: lost
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(f"\0{name}")
            child.send(signal.SIGHUP)
            child.wait_for("reload 1: done")
            child.send(signal.SIGTERM)
            assert child.finish() == 0
            told = [x.decode().split("\n")[0] for x in heard(sock)]
    # Generation 1's STATUS= may have been sent before or after the bind.
    after = told[told.index("RELOADING=1") :]
    assert after == ["RELOADING=1", "READY=1", "STATUS=serving", "STOPPING=1"]


def test_long_statuses_do_not_stop_the_relay() -> None:
    """Each datagram is relayed on its own, cut to fit; malformed ones are not."""
    with supervisor_socket() as (address, sock):
        command = ("-m", "shutdown_scope", "run", "--")
        env = {"NOTIFY_SOCKET": address}
        with Launcher(
            *command, sys.executable, LAUNCHED, "bigstatus", env=env
        ) as child:
            child.wait_for(") ready")
            child.send(signal.SIGTERM)
            assert child.finish() == 0
        datagrams = heard(sock)
    assert all(len(x) <= 4096 for x in datagrams)  # what systemd reads whole
    lines = [line for x in datagrams for line in x.decode().split("\n")]
    assert lines.index("READY=1") < lines.index("STOPPING=1")
    statuses = [x[len("STATUS=") :] for x in lines if x.startswith("STATUS=")]
    assert statuses[:2] == ["a" * 2500, "b" * 2500]
    # 3000 bytes that are not UTF-8 decode to 9000 bytes: cut to one datagram.
    assert set(statuses[2]) == {"\ufffd"}
    assert 4000 < len(statuses[2].encode()) <= 4096 - len("STATUS=")
    # The datagram with a NUL inside was dropped whole, as systemd drops it.
    assert not any("nul" in x for x in statuses)
    assert "serving" in statuses


# -- a program that is not the process the launcher started -------------------------


def test_a_shell_that_did_not_exec_the_program_is_named(tmp_path: Path) -> None:
    """``sh -c "python app.py; ..."``: the shell is the main process, not the app.

    If the launcher were SIGKILLed, only the shell would be told to stop and the
    app would keep the socket: the launcher says so where it is seen, in the
    supervisor's STATUS= and in the failed reload, not only in its log.
    """
    control = str(tmp_path / "control")
    script = f'"{sys.executable}" "{LAUNCHED}" serve,readycrash; exit $?'
    options = ("--listen", "127.0.0.1:0", "--control", control)
    with supervisor_socket() as (address, sock):
        command = ("-m", "shutdown_scope", "run", *options, "--", "sh", "-c", script)
        with Launcher(*command, env={"NOTIFY_SOCKET": address}) as child:
            port = port_of(child)
            shell = pid_after(child, "generation 1 (pid ")
            program = pid_after(child, "gen 1 pid ")
            assert ask(port) == f"gen 1 pid {program}"  # it serves, under a shell
            result = reload_command("--control", control)
            assert result.returncode == 1
            shell_2 = pid_after(child, "generation 2 (pid ")
            why = re.search(r"READY=1 from pid (\d+) was dropped", result.stderr)
            assert why is not None, result.stderr
            assert int(why.group(1)) not in {shell_2, program}
            assert f"not its main process (pid {shell_2})" in result.stderr
            child.send(signal.SIGTERM)
            assert child.finish() == 128 + signal.SIGTERM  # the shell's
        told = [x.decode() for x in heard(sock)]
    assert told[0] == (
        f"STATUS=generation 1 (pid {shell}): READY=1 from pid {program} was"
        f" dropped: not its main process (pid {shell}), see --notify-access"
    )
    assert told[1].startswith("RELOADING=1\n")
    assert "READY=1" not in told[:2]  # the supervisor never heard it was ready


def test_as_pid_1_a_killed_launcher_takes_every_process_with_it() -> None:
    """The limit above does not apply in a container: when PID 1 dies, the
    kernel kills its PID namespace, the app under the shell included."""
    prefix = _in_new_pid_namespace()
    script = f'"{sys.executable}" "{LAUNCHED}" serve; exit $?'
    command = [*prefix, sys.executable, "-m", "shutdown_scope", "run", "--"]
    with Child(
        "-c",
        "import os, sys; os.execvp(sys.argv[1], sys.argv[1:])",
        *command,
        "sh",
        "-c",
        script,
    ) as child:
        child.wait_for(") started")
        child.wait_for("gen 1 pid")
        (launcher_pid,) = child_pids(child.proc.pid)  # unshare's child: PID 1
        (shell,) = child_pids(launcher_pid)
        (program,) = child_pids(shell)
        os.kill(launcher_pid, signal.SIGKILL)
        assert child.finish() != 0
    assert not Path(f"/proc/{program}").exists()
