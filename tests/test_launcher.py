"""The ``shutdown-scope`` command with real processes, signals and sockets.

The launched child is ``tests/_launched.py`` (plain sockets and signals), so these
tests check the launcher alone; tests/test_reload_hypercorn.py runs it with a real
hypercorn app under graceful_scope.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _launcher_events import EventLauncher, launcher_command
from _spawn import Child, Launcher, child_pids

from shutdown_scope._launcher import main
from shutdown_scope._launcher._parser import command_parser
from shutdown_scope._launcher._spawn import spawn

LAUNCHED = str(Path(__file__).with_name("_launched.py"))

pytestmark = pytest.mark.subprocess


def launcher(*options: str, behaviour: str = "serve") -> Launcher:
    """``python -m shutdown_scope run OPTIONS -- python _launched.py BEHAVIOUR``
    with the text log (the launcher test files not yet reading events)."""
    return Launcher(
        "-m",
        "shutdown_scope",
        "run",
        *options,
        "--",
        sys.executable,
        LAUNCHED,
        behaviour,
    )


def json_launcher(
    *options: str, behaviour: str = "serve", env: dict[str, str] | None = None
) -> EventLauncher:
    """``python -m shutdown_scope run --log-format json OPTIONS -- python
    _launched.py BEHAVIOUR``."""
    command = [sys.executable, LAUNCHED, behaviour]
    return EventLauncher(*launcher_command(*options, command=command), env=env)


def port_of(child: Child) -> int:
    """The port of the launcher's first listening socket: from event
    ``listening`` (or the text log's line, for a text launcher)."""
    if isinstance(child, EventLauncher):
        address = child.wait_event("listening")["address"]
    else:
        line = child.wait_for("listening on 127.0.0.1:")
        address = line.split("listening on ")[1].split()[0]
    match = re.fullmatch(r"127\.0\.0\.1:(\d+)", address)
    assert match is not None, address
    return int(match.group(1))


def wait_for_all(child: Child, *markers: str) -> None:
    """Read until every marker has appeared, in any order (two processes write)."""
    while not all(marker in child.output for marker in markers):
        child.wait_for("")


def messages(child: EventLauncher) -> str:
    """The launcher's records' sentences: for error messages, which are the
    user's one-line answer."""
    return "\n".join(e["message"] for e in child.events)


def ask(port: int) -> str:
    """Connect, read the one-line answer: ``gen N pid P``."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        return conn.makefile().readline().strip()


def reload_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shutdown_scope", "reload", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# -- exit codes ---------------------------------------------------------------


def test_the_exit_code_is_the_childs() -> None:
    with json_launcher(behaviour="exit:7") as child:
        assert child.finish() == 7
    assert child.named("child_exited", generation=1, exit_code=7, on_its_own=True)
    assert child.named("exited", exit_code=7)


def test_a_child_killed_by_a_signal_gives_128_plus_its_number() -> None:
    program = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    command = [sys.executable, "-c", program]
    with EventLauncher(*launcher_command(command=command)) as child:
        assert child.finish() == 128 + signal.SIGKILL
    assert child.named("child_exited", generation=1, exit_code=137)


def test_a_command_that_cannot_run_is_reported_with_127() -> None:
    with Child("-m", "shutdown_scope", "run", "--", "no-such-command-xyz") as child:
        assert child.finish() == 127
    assert "cannot run 'no-such-command-xyz': No such file or directory" in child.output


@pytest.mark.parametrize(
    ("content", "mode", "error"),
    [
        (b"#!/bin/sh\necho hi\n", 0o644, "Permission denied"),
        (b"\x00\x01\x02", 0o755, "Exec format error"),
    ],
    ids=["not_executable", "not_a_program"],
)
def test_a_file_that_cannot_be_executed_is_reported_with_126(
    tmp_path: Path, content: bytes, mode: int, error: str
) -> None:
    program = tmp_path / "program"
    program.write_bytes(content)
    program.chmod(mode)
    with Child("-m", "shutdown_scope", "run", "--", str(program)) as child:
        assert child.finish() == 126
    assert error in child.output


def test_no_command_is_a_usage_error() -> None:
    with Child("-m", "shutdown_scope", "run", "--") as child:
        assert child.finish() == 2
    assert "no command" in child.output


# -- signals ------------------------------------------------------------------


def test_sigterm_is_forwarded_and_the_launcher_exits_with_the_child() -> None:
    with json_launcher() as child:
        child.wait_for("gen 1 pid")
        child.send(signal.SIGTERM)
        child.wait_for("gen 1 got SIGTERM")
        assert child.finish() == 0
    (spawned,) = child.named("generation_spawned", generation=1)
    assert child.named("stopping", reason="received SIGTERM")
    assert child.named("signal_forwarded", signal="SIGTERM", pids=spawned["pids"])
    names = [n for n in child.names() if n in {"stopping", "child_exited", "exited"}]
    assert names == ["stopping", "child_exited", "exited"]
    assert child.named("child_exited", pid=spawned["pids"][0], exit_code=0)
    assert child.named("exited", exit_code=0)


def test_rewrite_turns_sigterm_into_sigint() -> None:
    with json_launcher("--rewrite", "TERM:INT") as child:
        child.wait_for("gen 1 pid")
        child.send(signal.SIGTERM)
        child.wait_for("gen 1 got SIGINT")
        assert child.finish() == 130
    assert child.named("signal_forwarded", signal="SIGTERM", sent_as="SIGINT")


def test_a_repeated_signal_inside_the_debounce_window_counts_once() -> None:
    with json_launcher("--debounce", "30") as child:
        child.wait_for("gen 1 pid")
        child.send(signal.SIGUSR1)
        child.wait_for("gen 1 got SIGUSR1")
        child.send(signal.SIGUSR1)
        child.send(signal.SIGTERM)
        child.wait_for("gen 1 got SIGTERM")  # still running: SIGUSR1 did not stop it
        assert child.finish() == 0
    assert child.output.count("got SIGUSR1") == 1
    assert len(child.named("signal_forwarded", signal="SIGUSR1")) == 1
    assert len(child.named("signal_debounced", signal="SIGUSR1")) == 1


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period() -> None:
    with json_launcher("--grace-period", "0.5", behaviour="ignore") as child:
        child.wait_for("gen 1 pid")
        child.send(signal.SIGTERM)
        child.wait_for("gen 1 got SIGTERM")
        assert child.finish() == 128 + signal.SIGKILL
    assert child.named("child_exited", generation=1, exit_code=128 + signal.SIGKILL)


def test_orphans_of_the_child_are_reaped() -> None:
    """The launcher is a child subreaper: an orphaned grandchild is its to reap."""
    with json_launcher(behaviour="orphan") as child:
        orphan = int(child.wait_for("orphan ").split()[1])
        child.wait_event("orphan_reaped", pid=orphan, exit_code=0)
        child.send(signal.SIGTERM)
        assert child.finish() == 0


def _in_new_pid_namespace() -> list[str]:
    # --kill-child: if unshare dies (the test failed), the launcher dies with it.
    prefix = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
    try:
        probe = subprocess.run(
            [*prefix, "true"], capture_output=True, timeout=10, check=False
        )
    except FileNotFoundError:
        pytest.skip("unshare (util-linux) is not installed")
    if probe.returncode != 0:
        pytest.skip(
            f"cannot make a PID namespace here: {probe.stderr.decode().strip()}"
        )
    return prefix


def test_as_pid_1_it_forwards_sigterm_and_reaps_orphans() -> None:
    prefix = _in_new_pid_namespace()
    command = [*prefix, sys.executable, "-m", "shutdown_scope", "run", "--"]
    with Child(
        "-c",
        "import os, sys; os.execvp(sys.argv[1], sys.argv[1:])",
        *command,
        sys.executable,
        LAUNCHED,
        "orphan",
    ) as child:
        orphan = child.wait_for("orphan ").split()[1]
        child.wait_for(f"reaped orphan pid {orphan}")
        child.index("gen 1 pid 2 ")  # the launcher is 1, its child 2
        # The launcher, seen from here: the child of unshare's forked child.
        (launcher_pid,) = child_pids(child.proc.pid)
        assert Path(f"/proc/{launcher_pid}/status").read_text().count("NSpid:") == 1
        assert (
            "\t1\n"
            in Path(f"/proc/{launcher_pid}/status").read_text().split("NSpid:")[1]
        )
        os.kill(launcher_pid, signal.SIGTERM)
        child.wait_for("gen 1 got SIGTERM")
        assert child.finish() == 0


# -- sockets ------------------------------------------------------------------


def test_listen_hands_the_socket_to_the_child_with_its_own_listen_pid() -> None:
    with json_launcher("--listen", "127.0.0.1:0") as child:
        port = port_of(child)
        pid = child.wait_for("gen 1 pid").split()[3]
        assert ask(port) == f"gen 1 pid {pid}"
        child.send(signal.SIGTERM)
        assert child.finish() == 0


def test_a_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with json_launcher("--listen", f"127.0.0.1:{port}") as child:
            assert child.finish() == 1
    error = f"cannot listen on 127.0.0.1:{port}: Address already in use"
    assert error in messages(child)
    assert not child.named("generation_spawned")


@pytest.mark.parametrize("address", ["8000", "localhost", "::1:80", "unix:", "h:99999"])
def test_a_malformed_listen_address_is_a_clear_error(address: str) -> None:
    with json_launcher("--listen", address) as child:
        assert child.finish() == 1
    assert f"--listen {address!r}" in messages(child)


def test_unix_sockets_can_be_handed_over(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    with json_launcher("--listen", f"unix:{path}") as child:
        child.wait_for("gen 1 pid")
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(str(path))
            assert conn.makefile().readline().startswith("gen 1 pid")
        child.send(signal.SIGTERM)
        assert child.finish() == 0


# -- reload -------------------------------------------------------------------


def test_sighup_hands_the_sockets_to_a_successor() -> None:
    with json_launcher("--listen", "127.0.0.1:0") as child:
        port = port_of(child)
        child.wait_event("generation_ready", generation=1)
        assert ask(port).startswith("gen 1 ")
        child.send(signal.SIGHUP)
        child.wait_event("reload_succeeded", reload=1, serving=2)
        child.wait_event("child_exited", generation=1, exit_code=0)
        assert ask(port).startswith("gen 2 ")
        child.send(signal.SIGTERM)
        child.wait_for("gen 2 got SIGTERM")
        assert child.finish() == 0
    assert child.names()[:1] == ["listening"]
    reload = [
        n
        for n in child.names()
        if n.startswith("reload") or n in {"generation_spawned", "child_exited"}
    ]
    assert reload == [
        "generation_spawned",
        "reload_requested",
        "generation_spawned",
        "reload_succeeded",
        "child_exited",
        "child_exited",
    ]
    assert child.named("generation_spawned", generation=2, reload=1)


def test_reload_through_the_control_socket_reports_the_outcome(tmp_path: Path) -> None:
    control = str(tmp_path / "control")
    with json_launcher("--listen", "127.0.0.1:0", "--control", control) as child:
        port = port_of(child)
        child.wait_event("generation_spawned", generation=1)
        result = reload_command("--control", control)
        assert result.returncode == 0, result.stderr
        assert "reload 1: generation 2" in result.stderr
        assert "ready; generation 1" in result.stderr
        assert child.wait_event("reload_requested")["via"] == "the control socket"
        child.wait_event("reload_succeeded", reload=1, serving=2)
        child.wait_event("child_exited", generation=1)  # it may take one connection
        assert ask(port).startswith("gen 2 ")
        child.send(signal.SIGTERM)
        assert child.finish() == 0
    assert not Path(control).exists()


def test_a_successor_that_crashes_leaves_the_old_generation_serving(
    tmp_path: Path,
) -> None:
    control = str(tmp_path / "control")
    with json_launcher(
        "--listen", "127.0.0.1:0", "--control", control, behaviour="serve,crash,serve"
    ) as child:
        port = port_of(child)
        child.wait_for("gen 1 pid")
        result = reload_command("--control", control)
        assert result.returncode == 1
        assert "generation 2" in result.stderr
        assert "exited before it was ready: exit code 3" in result.stderr
        assert "generation 1" in result.stderr
        assert "keeps serving" in result.stderr
        failed = child.wait_event("reload_failed", reload=1, serving=1)
        assert "exit code 3" in failed["reason"]
        assert ask(port).startswith("gen 1 ")
        # The next reload works.
        assert reload_command("--control", control).returncode == 0
        child.wait_event("reload_succeeded", reload=2, serving=3)
        child.wait_event("child_exited", generation=1)  # it may take one connection
        assert ask(port).startswith("gen 3 ")
        child.send(signal.SIGTERM)
        assert child.finish() == 0
    assert "gen 1 got SIGTERM" in child.output


def test_a_successor_never_ready_is_stopped_at_the_ready_timeout(
    tmp_path: Path,
) -> None:
    control = str(tmp_path / "control")
    with json_launcher(
        "--listen",
        "127.0.0.1:0",
        "--control",
        control,
        "--ready-timeout",
        "0.5",
        behaviour="serve,hang",
    ) as child:
        port = port_of(child)
        child.wait_for("gen 1 pid")
        result = reload_command("--control", control)
        assert result.returncode == 1
        assert "not ready within --ready-timeout 0.5 s" in result.stderr
        failed = child.wait_event("reload_failed", reload=1, serving=1)
        assert "--ready-timeout 0.5 s" in failed["reason"]
        # Not ready, but it accepts from the shared socket until it has stopped.
        child.wait_event("child_exited", generation=2, exit_code=0)
        assert ask(port).startswith("gen 1 ")
        child.send(signal.SIGTERM)
        assert child.finish() == 0
    assert "gen 1 got SIGTERM" in child.output


def test_a_sighup_storm_runs_one_reload_more_not_one_per_signal() -> None:
    with json_launcher(
        "--listen",
        "127.0.0.1:0",
        "--debounce",
        "0",
        "--ready-timeout",
        "1",
        behaviour="serve,hang,serve",
    ) as child:
        port = port_of(child)
        child.wait_for("gen 1 pid")
        child.send(signal.SIGHUP)
        child.wait_for("gen 2 pid")
        for _ in range(5):
            child.send(signal.SIGHUP)
            time.sleep(0.01)
        child.wait_event("reload_succeeded", reload=2, serving=3)
        # Each may take one last connection until it has stopped.
        child.wait_event("child_exited", generation=1)
        child.wait_event("child_exited", generation=2)
        assert ask(port).startswith("gen 3 ")
        child.send(signal.SIGTERM)
        assert child.finish() == 0
    assert [e["reload"] for e in child.named("reload_failed")] == [1]
    assert [e["reload"] for e in child.named("reload_succeeded")] == [2]
    spawned = {e["generation"] for e in child.named("generation_spawned")}
    assert spawned == {1, 2, 3}


def test_a_stop_during_a_reload_stops_both_generations(tmp_path: Path) -> None:
    control = str(tmp_path / "control")
    with json_launcher(
        "--listen", "127.0.0.1:0", "--control", control, behaviour="serve,hang"
    ) as child:
        child.wait_for("gen 1 pid")
        asking = subprocess.Popen(
            [sys.executable, "-m", "shutdown_scope", "reload", "--control", control],
            stderr=subprocess.PIPE,
            text=True,
        )
        child.wait_for("gen 2 pid")
        child.send(signal.SIGTERM)
        assert child.finish() == 0
        _, stderr = asking.communicate(timeout=30)
    assert asking.returncode == 1
    assert "stopping (received SIGTERM)" in stderr
    assert "gen 1 got SIGTERM" in child.output
    assert "gen 2 got SIGTERM" in child.output
    assert not child.named("reload_succeeded")
    assert not child.named("reload_failed")  # refused, as the launcher stops
    assert {e["generation"] for e in child.named("child_exited")} == {1, 2}


def test_reload_by_pid_file_sends_sighup(tmp_path: Path) -> None:
    pid_file = tmp_path / "launcher.pid"
    with json_launcher("--listen", "127.0.0.1:0", "--pid-file", str(pid_file)) as child:
        port = port_of(child)
        child.wait_event("generation_spawned", generation=1)
        assert pid_file.read_text().strip() == str(child.proc.pid)
        result = reload_command("--pid-file", str(pid_file))
        assert result.returncode == 0
        assert child.wait_event("reload_requested")["via"] == "SIGHUP"
        child.wait_event("reload_succeeded", reload=1, serving=2)
        child.wait_event("child_exited", generation=1)  # it may take a connection
        assert ask(port).startswith("gen 2 ")
        child.send(signal.SIGTERM)
        assert child.finish() == 0
    assert not pid_file.exists()


def test_reload_without_a_launcher_is_a_clear_error(tmp_path: Path) -> None:
    result = reload_command("--control", str(tmp_path / "nothing"))
    assert result.returncode == 1
    assert "no launcher at --control" in result.stderr


def test_the_launcher_adopts_sockets_from_systemd_socket_activate() -> None:
    """Real socket activation hands the launcher a socket; reloads keep it."""
    activate = "/usr/bin/systemd-socket-activate"
    if not Path(activate).exists():
        pytest.skip("systemd-socket-activate (Debian package systemd) is not installed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with Child(
        "-c",
        "import os, sys; os.execv(sys.argv[1], sys.argv[1:])",
        activate,
        "-l",
        f"127.0.0.1:{port}",
        "--fdname=web",
        sys.executable,
        "-m",
        "shutdown_scope",
        "run",
        "--",
        sys.executable,
        LAUNCHED,
        "serve",
    ) as child:
        child.wait_for(f"Listening on 127.0.0.1:{port}")
        assert ask(port).startswith("gen 1 ")  # the first connection starts us
        child.wait_for(f"listening on 127.0.0.1:{port} (fd 3 in the child)")
        child.send(signal.SIGHUP)
        child.wait_for("reload 1: done")
        child.wait_for("gen 1 exiting")  # it may take one last connection
        assert ask(port).startswith("gen 2 ")
        child.send(signal.SIGTERM)
        assert child.finish() == 0


def test_under_systemd_the_launcher_relays_readiness_reloads_and_stop(
    tmp_path: Path,
) -> None:
    """The launcher's own NOTIFY_SOCKET hears READY=1, RELOADING=1, STOPPING=1."""
    path = str(tmp_path / "notify")
    heard: list[str] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(path)
        manager.settimeout(10)
        env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000"}
        with json_launcher(env=env) as child:
            child.wait_event("generation_ready", generation=1)
            child.send(signal.SIGHUP)
            child.wait_event("reload_succeeded", reload=1, serving=2)
            child.send(signal.SIGTERM)
            assert child.finish() == 0
        manager.setblocking(False)  # the launcher has exited: all was sent
        with contextlib.suppress(BlockingIOError):
            while True:
                heard += manager.recv(4096).decode().splitlines()
    events = [x for x in heard if x in {"READY=1", "RELOADING=1", "STOPPING=1"}]
    assert events == ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"], heard
    reloading = heard.index("RELOADING=1")
    assert heard[reloading + 1].startswith("MONOTONIC_USEC=")
    # Each generation's status and watchdog pings go up: systemd watches the launcher.
    assert heard.count("STATUS=serving") == 2
    assert heard.count("WATCHDOG=1") == 2


def test_a_notify_socket_that_does_not_exist_is_reported_once(tmp_path: Path) -> None:
    env = {"NOTIFY_SOCKET": str(tmp_path / "missing")}
    with json_launcher(env=env) as child:
        child.wait_event("generation_ready", generation=1)
        child.send(signal.SIGHUP)
        child.wait_event("reload_succeeded", reload=1, serving=2)
        child.send(signal.SIGTERM)
        assert child.finish() == 0
    told = [e["message"] for e in child.events if "cannot notify" in e["message"]]
    assert len(told) == 1, child.transcript()
    assert "No such file or directory" in told[0]


# -- arguments ----------------------------------------------------------------


def test_rewrite_accepts_names_numbers_and_0() -> None:
    parser = command_parser()
    args = parser.parse_args(["run", "--rewrite", "SIGTERM:2", "--rewrite", "usr1:0"])
    assert dict(args.rewrite) == {signal.SIGTERM: signal.SIGINT, signal.SIGUSR1: 0}


def test_reload_of_a_pid_that_does_not_exist_is_a_clear_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["reload", "--pid", "999999999"]) == 1
    assert "cannot signal pid 999999999" in capsys.readouterr().err


def test_reload_with_a_bad_pid_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pid_file = tmp_path / "pid"
    pid_file.write_text("not a pid\n")
    assert main(["reload", "--pid-file", str(pid_file)]) == 1
    assert f"cannot read a pid from {pid_file}" in capsys.readouterr().err


def test_a_pid_file_that_cannot_be_written_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pid_file = tmp_path / "no-such-dir" / "pid"
    assert main(["run", "--pid-file", str(pid_file), "--", "true"]) == 1
    assert "cannot write --pid-file" in capsys.readouterr().err


def test_a_control_socket_that_cannot_be_bound_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    control = tmp_path / "no-such-dir" / "control"
    assert main(["run", "--control", str(control), "--", "true"]) == 1
    assert f"cannot listen on --control {control}" in capsys.readouterr().err


def test_the_control_socket_answers_an_unknown_request(tmp_path: Path) -> None:
    control = str(tmp_path / "control")
    with json_launcher("--control", control) as child:
        child.wait_event("generation_ready")
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(control)
            conn.sendall(b"restart\n")
            answer = conn.makefile().readline()
        assert answer.startswith("error unknown request")
        child.send(signal.SIGTERM)
        assert child.finish() == 0


def test_a_reload_after_the_stop_began_is_refused() -> None:
    with json_launcher("--grace-period", "1", behaviour="ignore") as child:
        child.wait_event("generation_ready")
        child.send(signal.SIGTERM)
        child.wait_for("gen 1 got SIGTERM")
        child.send(signal.SIGHUP)
        child.wait_event("reload_refused")
        assert child.finish() == 128 + signal.SIGKILL
    assert not child.named("generation_spawned", generation=2)
    assert not child.named("reload_succeeded")


def test_a_signal_rewritten_to_0_is_dropped() -> None:
    with json_launcher("--rewrite", "USR1:0") as child:
        child.wait_event("generation_ready")
        child.send(signal.SIGUSR1)
        child.send(signal.SIGTERM)
        assert child.finish() == 0
    assert "got SIGUSR1" not in child.output
    assert [e["signal"] for e in child.named("signal_forwarded")] == ["SIGTERM"]
    assert [e["signal"] for e in child.named("signal_dropped")] == ["SIGUSR1"]


def test_a_successor_that_cannot_be_executed_fails_its_reload(tmp_path: Path) -> None:
    script = tmp_path / "serve.sh"
    script.write_text(f"#!/bin/sh\nexec {sys.executable} {LAUNCHED} serve\n")
    script.chmod(0o755)
    command = launcher_command("--listen", "127.0.0.1:0", command=[str(script)])
    with EventLauncher(*command) as child:
        port = port_of(child)
        child.wait_event("generation_ready")
        script.chmod(0o644)
        child.send(signal.SIGHUP)
        failed = child.wait_event("reload_failed", reload=1, serving=1)
        assert failed["reason"].startswith("cannot run"), failed
        assert "Permission denied" in failed["reason"]
        assert ask(port).startswith("gen 1 ")
        child.send(signal.SIGTERM)
        assert child.finish() == 0


def test_a_malformed_watchdog_usec_is_reported(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(path)
        env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "soon"}
        with json_launcher(env=env) as child:
            child.wait_event("generation_ready")
            child.send(signal.SIGTERM)
            assert child.finish() == 0
    assert "no watchdog pings: WATCHDOG_USEC" in messages(child)


def test_the_control_socket_survives_bad_and_vanishing_clients(tmp_path: Path) -> None:
    control = str(tmp_path / "control")
    with json_launcher(
        "--control", control, "--ready-timeout", "0.5", behaviour="serve,hang"
    ) as child:
        child.wait_event("generation_ready")
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(control)
            conn.sendall(b"x" * 100)
            assert conn.makefile().readline() == "error request too long\n"
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(control)
            conn.sendall(b"rel")
            conn.sendall(b"oad\n")  # one request in two writes
            child.wait_event("generation_spawned", generation=2, reload=1)
        # That client left before its answer; the launcher goes on.
        child.wait_event("reload_failed", reload=1, serving=1)
        result = reload_command("--control", control)
        assert result.returncode == 1
        assert "reload 2" in result.stderr
        child.send(signal.SIGTERM)
        assert child.finish() == 0


def _exec_launcher_with(environment: dict[str, str], fd3: str) -> Child:
    """Exec the launcher with LISTEN_* for its own pid and ``fd3`` open at fd 3."""
    program = f"""
import os, socket, sys
if {fd3!r} == "socket":
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    print("port", sock.getsockname()[1], flush=True)
    os.dup2(sock.fileno(), 3)
elif {fd3!r} == "file":
    os.dup2(os.open(os.devnull, os.O_RDONLY), 3)
os.set_inheritable(3, True)  # dup2 onto itself keeps close-on-exec
os.environ.update({environment!r})
if os.environ.get("LISTEN_PID") == "self":
    os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.executable, [sys.executable, "-m", "shutdown_scope", "run", "--",
         sys.executable, {LAUNCHED!r}, "serve"])
"""
    return Launcher("-c", program)


@pytest.mark.parametrize(
    ("environment", "fd3", "message"),
    [
        (
            {"LISTEN_FDS": "x", "LISTEN_PID": "self"},
            "socket",
            "LISTEN_FDS must be a decimal integer >= 0, not 'x'",
        ),
        (
            {"LISTEN_FDS": "1", "LISTEN_PID": "-3"},
            "socket",
            "LISTEN_PID must be a decimal integer >= 1, not '-3'",
        ),
        (
            {"LISTEN_FDS": "1", "LISTEN_PID": "self"},
            "file",
            "LISTEN_FDS: fd 3 (unknown) is not a socket",
        ),
        (
            {"LISTEN_FDS": "1", "LISTEN_PID": "self", "LISTEN_FDNAMES": "a:b"},
            "socket",
            "LISTEN_FDNAMES must hold 1 non-empty name(s)",
        ),
    ],
)
def test_malformed_inherited_sockets_are_clear_errors(
    environment: dict[str, str], fd3: str, message: str
) -> None:
    with _exec_launcher_with(environment, fd3) as child:
        assert child.finish() == 1
    assert message in child.output


def test_sockets_passed_to_another_process_are_left_alone() -> None:
    environment = {"LISTEN_FDS": "1", "LISTEN_PID": "1"}
    with _exec_launcher_with(environment, "socket") as child:
        child.wait_for(") ready")
        assert "listening on" not in child.output
        assert "gen 1 pid" in child.output
        assert "listening False" in child.output
        child.send(signal.SIGTERM)
        assert child.finish() == 0


def test_inherited_sockets_are_adopted_and_named() -> None:
    environment = {"LISTEN_FDS": "1", "LISTEN_PID": "self", "LISTEN_FDNAMES": "web"}
    with _exec_launcher_with(environment, "socket") as child:
        port = int(child.wait_for("port ").split()[1])
        child.wait_for(f"listening on 127.0.0.1:{port} (fd 3 in the child)")
        assert ask(port).startswith("gen 1 ")
        child.send(signal.SIGTERM)
        assert child.finish() == 0


def test_ipv6_addresses_are_written_in_brackets() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError as error:
        pytest.skip(f"no IPv6 loopback: {error}")
    with json_launcher("--listen", "[::1]:0") as child:
        address = child.wait_event("listening", fd=3)["address"]
        assert address.startswith("[::1]:"), address
        port = int(address.split("]:")[1])
        child.wait_event("generation_ready")
        with socket.create_connection(("::1", port), timeout=10) as conn:
            assert conn.makefile().readline().startswith("gen 1 ")
        child.send(signal.SIGTERM)
        assert child.finish() == 0


def test_spawn_refuses_what_it_cannot_do() -> None:
    with pytest.raises(ValueError, match="no command"):
        spawn([], {}, [], reset_signals=())


def test_a_stop_during_the_old_generations_drain_is_not_sent_to_it_twice() -> None:
    """A second SIGTERM would make a graceful_scope skip its drain."""
    with json_launcher("--grace-period", "2", behaviour="ignore,serve") as child:
        child.wait_event("generation_ready")
        child.send(signal.SIGHUP)
        # Ignored: generation 1 is still "draining".
        child.wait_event("reload_succeeded", reload=1, serving=2)
        child.wait_for("gen 1 got SIGTERM")
        child.send(signal.SIGTERM)
        child.wait_event("stopping", reason="received SIGTERM")
        child.wait_for("gen 2 exiting")
        assert child.finish() == 0  # generation 2's exit code
    (second,) = child.named("generation_spawned", generation=2)
    assert child.named("signal_forwarded", signal="SIGTERM", pids=second["pids"])
    assert child.output.count("gen 1 got SIGTERM") == 1
    assert child.named("child_exited", generation=1, exit_code=128 + signal.SIGKILL)


def test_a_repeated_stop_signal_reaches_every_generation() -> None:
    options = ("--debounce", "0", "--grace-period", "20")
    with json_launcher(*options, behaviour="ignore,serve") as child:
        child.wait_event("generation_ready")
        child.send(signal.SIGHUP)
        child.wait_event("reload_succeeded", reload=1, serving=2)
        child.wait_for("gen 1 got SIGTERM")
        child.send(signal.SIGTERM)
        child.wait_for("gen 2 got SIGTERM")
        (second,) = child.named("generation_spawned", generation=2)
        child.wait_event("signal_forwarded", signal="SIGTERM", pids=second["pids"])
        child.send(signal.SIGTERM)
        while child.output.count("gen 1 got SIGTERM") < 2:
            child.wait_for("")
        child.send(signal.SIGKILL)


# -- found in review -------------------------------------------------------------


def test_after_the_stop_new_connections_are_refused_not_left_to_hang() -> None:
    """The launcher lets go of its copy of the socket when it stops."""
    with json_launcher("--listen", "127.0.0.1:0", behaviour="drain") as child:
        port = port_of(child)
        child.wait_event("generation_ready")
        child.send(signal.SIGTERM)
        child.wait_for("gen 1 closed its listener")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        assert child.finish() == 0


def test_a_successor_ready_after_the_stop_began_is_just_stopped() -> None:
    with json_launcher(behaviour="serve,slowready") as child:
        child.wait_event("generation_ready")
        child.send(signal.SIGHUP)
        child.wait_for("gen 2 pid")
        child.send(signal.SIGTERM)
        # It sends READY=1 and exits at once: whether the launcher reads the
        # READY=1 before it reaps the exit ("ready, but the launcher is
        # stopping") is a matter of timing; either way nothing is reloaded.
        child.wait_for("gen 2 exiting")
        assert child.finish() == 0
    assert "gen 2 got SIGTERM" in child.output
    assert not child.named("reload_succeeded")


def test_a_successor_that_crashes_once_ready_does_not_cut_the_old_drain() -> None:
    with json_launcher("--grace-period", "1", behaviour="ignore,readycrash") as child:
        child.wait_event("generation_ready")
        child.send(signal.SIGHUP)
        child.wait_event("reload_succeeded", reload=1, serving=2)
        child.wait_for("gen 1 got SIGTERM")
        child.wait_event("child_exited", generation=2, exit_code=1)
        assert child.finish() == 1  # generation 2's exit code
    assert child.output.count("gen 1 got SIGTERM") == 1
    assert child.named("child_exited", generation=1, exit_code=128 + signal.SIGKILL)


def test_a_worker_left_in_the_childs_group_is_stopped_and_killed() -> None:
    with json_launcher("--grace-period", "1", behaviour="worker") as child:
        worker = int(child.wait_for("worker ").split()[1])
        child.wait_event("generation_ready")
        child.send(signal.SIGTERM)
        child.wait_for("gen 1 exiting")
        assert child.finish() == 0
    assert child.named("child_exited", generation=1, exit_code=0)
    status = Path(f"/proc/{worker}/status")
    assert not status.exists() or "State:\tZ" in status.read_text()


def test_the_child_gets_default_sigpipe() -> None:
    command = ("-m", "shutdown_scope", "run", "--", "sh", "-c", "yes | head -n 1")
    with Child(*command) as child:
        assert child.finish() == 0
    assert "Broken pipe" not in child.output


def test_a_rewrite_of_sigterm_to_0_ignores_it() -> None:
    with json_launcher("--rewrite", "TERM:0") as child:
        child.wait_event("generation_ready")
        child.send(signal.SIGTERM)
        child.send(signal.SIGINT)
        assert child.finish() == 130
    assert child.named("stopping", reason="received SIGINT")
    assert [e["signal"] for e in child.named("signal_forwarded")] == ["SIGINT"]


def test_if_the_launcher_is_killed_the_child_is_asked_to_stop() -> None:
    with json_launcher() as child:
        child.wait_event("generation_ready")
        child.send(signal.SIGKILL)
        child.wait_for("gen 1 got SIGTERM")
        child.wait_for("gen 1 exiting")


def test_a_unix_socket_in_use_is_not_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    control = tmp_path / "control"
    with json_launcher("--listen", f"unix:{path}", "--control", str(control)) as first:
        first.wait_event("generation_ready")
        with json_launcher("--control", str(control)) as other:
            assert other.finish() == 1
        assert f"--control {control}: another process listens" in messages(other)
        with json_launcher("--listen", f"unix:{path}") as second:
            assert second.finish() == 1
        error = f"cannot listen on unix:{path}: another process listens"
        assert error in messages(second)
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(str(path))
            assert conn.makefile().readline().startswith("gen 1 pid")
        assert reload_command("--control", str(control)).returncode == 0
        first.send(signal.SIGTERM)
        assert first.finish() == 0
    assert not path.exists()
    assert not control.exists()


def test_a_client_that_half_closes_still_hears_the_outcome(tmp_path: Path) -> None:
    control = str(tmp_path / "control")
    with json_launcher("--control", control) as child:
        child.wait_event("generation_ready")
        with socket.socket(socket.AF_UNIX) as conn:
            conn.settimeout(20)
            conn.connect(control)
            conn.sendall(b"reload\nmore")
            conn.shutdown(socket.SHUT_WR)
            answer = conn.makefile().readline()
        assert answer.startswith("ok reload 1: generation 2")
        child.send(signal.SIGTERM)
        assert child.finish() == 0
