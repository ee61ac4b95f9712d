"""Who may drive the launcher: its pid file, its control socket, its runtime directory.

Real processes, signals, sockets and uids: another user is uid 65534 through
``setpriv`` (those tests need root). Helpers come from tests/test_launcher.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _spawn import TIMEOUT, Child, Launcher, child_pids
from test_launcher import (
    LAUNCHED,
    _in_new_pid_namespace,
    ask,
    launcher,
    port_of,
    reload_command,
)

import shutdown_scope
from shutdown_scope._launcher import main

pytestmark = pytest.mark.subprocess

NOBODY = 65534
# A group nobody is in, for --control-group (it need not exist in /etc/group).
GROUP = 4242


def exec_launcher(*options: str, umask: int | None = None, nofile: int = 0) -> Launcher:
    """A launcher started with ``umask`` and a soft RLIMIT_NOFILE of ``nofile``."""
    program = f"""
import os, resource, sys
umask, nofile = {umask!r}, {nofile!r}
if umask is not None:
    os.umask(umask)
if nofile:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))
os.execv(sys.executable, [sys.executable, "-m", "shutdown_scope", "run",
         *{list(options)!r}, "--", sys.executable, {LAUNCHED!r}, "serve"])
"""
    return Launcher("-c", program)


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as uid/gid 65534, no other groups, unless ``argv`` sets them."""
    setpriv = ["setpriv", f"--reuid={NOBODY}"]
    if not any(x.startswith("--regid") for x in argv):
        setpriv += [f"--regid={NOBODY}", "--clear-groups"]
    return subprocess.run(
        [*setpriv, *argv], capture_output=True, text=True, timeout=60, check=False
    )


def nobody_reloads(control: Path, *ids: str) -> subprocess.CompletedProcess[str]:
    """``shutdown-scope reload --control`` as another user (``ids``: setpriv's)."""
    return as_nobody(
        *ids,
        sys.executable,
        "-m",
        "shutdown_scope",
        "reload",
        "--control",
        str(control),
    )


@pytest.fixture
def another_user() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root, to act as another uid with setpriv")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    probe = as_nobody(sys.executable, "-c", "import shutdown_scope")
    if probe.returncode != 0:
        pytest.skip(f"uid {NOBODY} cannot import shutdown_scope: {probe.stderr}")


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory every user may enter and write in, sticky like /tmp."""
    path = Path(tempfile.mkdtemp(prefix="launcher-access-"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def sleeper() -> subprocess.Popen[bytes]:
    sleep = shutil.which("sleep")
    assert sleep is not None
    return subprocess.Popen([sleep, "60"])


def signal_that_ended(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM it: a SIGHUP sent before (lower number) would have ended it first."""
    process.terminate()
    return -process.wait(timeout=TIMEOUT)


def connect(path: str) -> socket.socket:
    """A connection to ``path``, waiting while its backlog is full."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        conn = socket.socket(socket.AF_UNIX)
        conn.settimeout(TIMEOUT)
        try:
            conn.connect(path)
        except BlockingIOError:
            conn.close()
            assert time.monotonic() < deadline, f"{path} accepts no connection"
            time.sleep(0.01)
            continue
        return conn


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


# -- which pid `reload` signals --------------------------------------------------

# Run as pid 1 of a new PID namespace, in a session of its own: kill(-1) reaches
# only the namespace, and kill(0) (a process group crosses namespaces) only it.
_PID_NAMESPACE_PROGRAM = r"""
import json, os, signal, subprocess, sys
from pathlib import Path
os.setsid()
heard = []
signal.signal(signal.SIGHUP, lambda *_: heard.append("SIGHUP"))
canary = subprocess.Popen(["sleep", "60"])
def reload(*args):
    done = subprocess.run([sys.executable, "-m", "shutdown_scope", "reload", *args],
                          capture_output=True, text=True)
    return [done.returncode, done.stderr.strip().splitlines()[-1:]]
results = {}
for pid in ("-1", "0", "1"):
    results[f"--pid {pid}"] = reload("--pid", pid)
    pid_file = Path(sys.argv[1], f"holds{pid}")
    pid_file.write_text(f"{pid}\n")
    results[f"pid file {pid}"] = reload("--pid-file", str(pid_file))
canary.terminate()
print(json.dumps({"results": results, "init heard": heard,
                  "canary": canary.wait()}))
"""


def test_pids_that_reach_many_processes_or_init_are_never_signalled(
    tmp_path: Path,
) -> None:
    """-1 is every process, 0 our group, 1 init: run where that harms nothing."""
    prefix = _in_new_pid_namespace()
    done = subprocess.run(
        [*prefix, sys.executable, "-c", _PID_NAMESPACE_PROGRAM, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        start_new_session=True,
    )
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout.splitlines()[-1])
    assert outcome["init heard"] == []  # pid 1 of the namespace: this program
    assert outcome["canary"] == -signal.SIGTERM  # not SIGHUP
    results = outcome["results"]
    assert results["--pid -1"][0] == 2
    assert "'-1' is not a process id" in results["--pid -1"][1][0]
    assert results["--pid 0"][0] == 2
    assert results["--pid 1"][0] == 1
    assert "pid 1 is 'python" in results["--pid 1"][1][0]
    assert "not a shutdown-scope launcher" in results["--pid 1"][1][0]
    for pid in ("-1", "0"):
        assert results[f"pid file {pid}"] == [1, [results[f"pid file {pid}"][1][0]]]
        assert "does not hold a pid" in results[f"pid file {pid}"][1][0]
    assert results["pid file 1"][0] == 1
    assert "stale pid file" in results["pid file 1"][1][0]


def test_reload_by_pid_refuses_a_process_that_is_not_a_launcher() -> None:
    other = sleeper()
    result = reload_command("--pid", str(other.pid))
    assert signal_that_ended(other) == signal.SIGTERM
    assert result.returncode == 1
    assert f"pid {other.pid} is 'sleep', not a shutdown-scope launcher" in (
        result.stderr
    )


def test_reload_by_pid_signals_a_launcher() -> None:
    with launcher() as child:
        child.wait_for(") ready")
        comm = Path(f"/proc/{child.proc.pid}/comm").read_text()
        assert comm == "shutdown-scope\n"
        result = reload_command("--pid", str(child.proc.pid))
        assert result.returncode == 0, result.stderr
        child.wait_for("reload 1: done")
        child.send(signal.SIGTERM)
        assert child.finish() == 0


def test_a_launcher_that_is_pid_1_can_be_reloaded_by_pid_and_pid_file(
    tmp_path: Path,
) -> None:
    """In its container, the launcher is pid 1: `reload --pid 1` must reach it."""
    prefix = _in_new_pid_namespace()
    if shutil.which("nsenter") is None:
        pytest.skip("nsenter (util-linux) is not installed")
    pid_file = tmp_path / "launcher.pid"
    command = [*prefix, sys.executable, "-m", "shutdown_scope", "run"]
    with Launcher(
        "-c",
        "import os, sys; os.execvp(sys.argv[1], sys.argv[1:])",
        *command,
        "--pid-file",
        str(pid_file),
        "--debounce",
        "0",
        "--",
        sys.executable,
        LAUNCHED,
        "serve",
    ) as child:
        child.wait_for(") ready")
        assert pid_file.read_text() == "1\n"
        (launcher_pid,) = child_pids(child.proc.pid)
        inside = ["nsenter", f"--target={launcher_pid}", "--pid", "--mount", "--"]
        reload = [sys.executable, "-m", "shutdown_scope", "reload"]
        for target in (["--pid", "1"], ["--pid-file", str(pid_file)]):
            done = subprocess.run(
                [*inside, *reload, *target],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 0, done.stderr
        child.wait_for("reload 2: done")
        # Seen from here, the file names pid 1 but the lock is held by another pid.
        result = reload_command("--pid-file", str(pid_file))
        assert result.returncode == 1
        assert f"names pid 1, but pid {launcher_pid} holds it" in result.stderr
        os.kill(launcher_pid, signal.SIGTERM)
        child.wait_for("gen 3 got SIGTERM")
        assert child.finish() == 0
    assert "reload 3" not in child.output


_HOLD_A_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("lock", ["unlocked", "locked by another process"])
def test_a_stale_pid_file_is_refused_and_its_pid_not_signalled(
    tmp_path: Path, lock: str
) -> None:
    """The pid in it now belongs to an unrelated process (here, a sleep)."""
    other = sleeper()
    pid_file = tmp_path / "launcher.pid"
    pid_file.write_text(f"{other.pid}\n")
    locker = None
    with contextlib.ExitStack() as stack:
        if lock != "unlocked":
            locker = stack.enter_context(Child("-c", _HOLD_A_LOCK, str(pid_file)))
            locker.wait_for("locked")
        result = reload_command("--pid-file", str(pid_file))
    assert signal_that_ended(other) == signal.SIGTERM
    assert result.returncode == 1
    if locker is None:
        assert f"stale pid file {pid_file}: no launcher holds it" in result.stderr
    else:
        assert f"names pid {other.pid}, but pid {locker.proc.pid} holds it" in (
            result.stderr
        )


@pytest.mark.parametrize("target", ["an existing file", "a missing file"])
def test_a_symlink_at_the_pid_file_path_is_refused(tmp_path: Path, target: str) -> None:
    victim = tmp_path / "victim"
    if target == "an existing file":
        victim.write_text("precious\n")
    pid_file = tmp_path / "launcher.pid"
    pid_file.symlink_to(victim)
    with launcher("--pid-file", str(pid_file)) as child:
        assert child.finish() == 1
    assert f"cannot write --pid-file {pid_file}: it is a symbolic link" in (
        child.output
    )
    assert "gen 1" not in child.output
    assert pid_file.is_symlink()
    if target == "an existing file":
        assert victim.read_text() == "precious\n"
    else:
        assert not victim.exists()
    assert sorted(x.name for x in tmp_path.iterdir()) == sorted(
        ["launcher.pid", *(["victim"] if victim.exists() else [])]
    )


@pytest.mark.parametrize("kind", ["text", "directory", "fifo"])
def test_a_file_that_is_not_a_pid_file_is_not_replaced(
    tmp_path: Path, kind: str
) -> None:
    pid_file = tmp_path / "launcher.pid"
    if kind == "text":
        pid_file.write_text("not a pid\n")
    elif kind == "directory":
        pid_file.mkdir()
    else:
        os.mkfifo(pid_file)
    with launcher("--pid-file", str(pid_file)) as child:
        assert child.finish() == 1
    assert f"cannot write --pid-file {pid_file}: it " in child.output
    if kind == "text":
        assert pid_file.read_text() == "not a pid\n"
    assert [x.name for x in tmp_path.iterdir()] == ["launcher.pid"]


@pytest.mark.parametrize("kind", ["symlink", "fifo", "device"])
def test_reload_reads_a_pid_only_from_a_regular_file(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pid_file = tmp_path / "launcher.pid"
    other = sleeper()
    if kind == "symlink":
        holder = tmp_path / "real.pid"
        holder.write_text(f"{other.pid}\n")
        pid_file.symlink_to(holder)
    elif kind == "fifo":
        os.mkfifo(pid_file)
    else:
        pid_file = Path(os.devnull)
    assert main(["reload", "--pid-file", str(pid_file)]) == 1
    assert signal_that_ended(other) == signal.SIGTERM
    reason = "a symbolic link" if kind == "symlink" else "not a regular file"
    assert f"cannot read a pid from {pid_file}: it is {reason}" in (
        capsys.readouterr().err
    )


def test_a_stale_pid_file_is_replaced_and_the_new_one_locked(tmp_path: Path) -> None:
    pid_file = tmp_path / "launcher.pid"
    pid_file.write_text("12345\n")
    with launcher("--pid-file", str(pid_file)) as child:
        child.wait_for(") ready")
        assert pid_file.read_text() == f"{child.proc.pid}\n"
        assert stat.S_IMODE(pid_file.stat().st_mode) == 0o644
        with launcher("--pid-file", str(pid_file)) as second:
            assert second.finish() == 1
        assert (
            f"--pid-file {pid_file}: a running launcher (pid {child.proc.pid}) holds it"
            in second.output
        )
        assert pid_file.read_text() == f"{child.proc.pid}\n"
        fd = os.open(pid_file, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        child.send(signal.SIGTERM)
        assert child.finish() == 0
    assert list(tmp_path.iterdir()) == []


def test_a_pid_file_replaced_during_the_run_is_not_removed_at_exit(
    tmp_path: Path,
) -> None:
    pid_file = tmp_path / "launcher.pid"
    with launcher("--pid-file", str(pid_file)) as child:
        child.wait_for(") ready")
        replacement = tmp_path / "new"
        replacement.write_text("someone else's\n")
        replacement.rename(pid_file)
        child.send(signal.SIGTERM)
        assert child.finish() == 0
    assert pid_file.read_text() == "someone else's\n"


# -- the control socket ------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "mode", "group"),
    [((), 0o600, None), (("--control-group", str(GROUP)), 0o660, GROUP)],
)
def test_the_control_socket_mode_does_not_depend_on_the_umask(
    tmp_path: Path, options: tuple[str, ...], mode: int, group: int | None
) -> None:
    control = tmp_path / "control"
    with exec_launcher("--control", str(control), *options, umask=0) as child:
        child.wait_for(") ready")
        seen = control.stat()
        assert stat.S_ISSOCK(seen.st_mode)
        assert stat.S_IMODE(seen.st_mode) == mode
        if group is not None:
            assert seen.st_gid == group
        child.send(signal.SIGTERM)
        assert child.finish() == 0


def test_another_uid_is_refused_even_through_a_0666_socket(
    another_user: None, public_dir: Path
) -> None:
    control = public_dir / "control"
    with launcher("--control", str(control)) as child:
        child.wait_for(") ready")
        control.chmod(0o666)  # only the peer check stands in the way now
        for _ in range(3):
            result = nobody_reloads(control)
            assert result.returncode == 1
            assert f"uid {NOBODY} may not use this control socket" in result.stderr
        assert reload_command("--control", str(control)).returncode == 0
        child.send(signal.SIGTERM)
        assert child.finish() == 0
    assert child.output.count("reload 1: generation 2") == 1
    assert "reload 2" not in child.output
    assert child.output.count(f"control socket: refused uid {NOBODY}") == 1
    assert "control socket: 3 connections refused in all" in child.output


@pytest.mark.parametrize(
    "ids",
    [
        (f"--regid={GROUP}", "--clear-groups"),
        (f"--regid={NOBODY}", f"--groups={GROUP}"),
    ],
    ids=["primary group", "supplementary group"],
)
def test_a_member_of_the_control_group_may_reload(
    another_user: None, public_dir: Path, ids: tuple[str, ...]
) -> None:
    control = public_dir / "control"
    with launcher("--control", str(control), "--control-group", str(GROUP)) as child:
        child.wait_for(") ready")
        result = nobody_reloads(control, *ids)
        assert result.returncode == 0, result.stderr
        assert "reload 1: generation 2" in result.stderr
        child.send(signal.SIGTERM)
        assert child.finish() == 0


def test_control_group_without_control_is_a_usage_error() -> None:
    with launcher("--control-group", str(GROUP)) as child:
        assert child.finish() == 2
    assert "--control-group needs --control PATH" in child.output


def test_idle_connections_do_not_block_a_reload(tmp_path: Path) -> None:
    control = str(tmp_path / "control")
    idle: list[socket.socket] = []
    with launcher("--control", control) as child:
        child.wait_for(") ready")
        try:
            idle.extend(connect(control) for _ in range(70))
            result = reload_command("--control", control)
            assert result.returncode == 0, result.stderr
            # The oldest idle connection made room.
            assert idle[0].recv(100) == b"error too many control connections\n"
        finally:
            for conn in idle:
                conn.close()
        child.send(signal.SIGTERM)
        assert child.finish() == 0


def test_a_client_that_sends_no_request_is_dropped(tmp_path: Path) -> None:
    control = str(tmp_path / "control")
    with launcher("--control", control) as child:
        child.wait_for(") ready")
        with connect(control) as silent, connect(control) as partial:
            partial.sendall(b"relo")
            for conn in (silent, partial):
                assert conn.makefile("rb").read() == b"error no request within 2 s\n"
        child.send(signal.SIGTERM)
        assert child.finish() == 0
    assert "generation 2" not in child.output


def test_out_of_file_descriptors_the_launcher_neither_spins_nor_floods(
    tmp_path: Path,
) -> None:
    control = str(tmp_path / "control")
    nofile = 66  # above 64: spawning a generation uses an fd from 64 up
    with exec_launcher("--control", control, nofile=nofile) as child:
        child.wait_for(") ready")
        fds = Path(f"/proc/{child.proc.pid}/fd")
        held: list[socket.socket] = []
        try:
            while len(list(fds.iterdir())) < nofile:  # it has accepted all it can
                held.append(connect(control))
            held.append(connect(control))  # this one it cannot accept
            child.wait_for("control socket: cannot accept")
            before = cpu_seconds(child.proc.pid)
            time.sleep(1)
            spent = cpu_seconds(child.proc.pid) - before
        finally:
            for conn in held:
                conn.close()
        result = reload_command("--control", control)
        assert result.returncode == 0, result.stderr
        child.send(signal.SIGTERM)
        assert child.finish() == 0
    assert spent < 0.25, f"{spent:.2f} s of CPU in 1 s out of file descriptors"
    assert child.output.count("control socket: cannot accept") <= 2
    assert len(child.lines) < 40, child.output[-2000:]


def test_reload_waits_while_the_backlog_is_full(tmp_path: Path) -> None:
    control = str(tmp_path / "control")
    with launcher("--control", control) as child:
        child.wait_for(") ready")
        child.send(signal.SIGSTOP)
        fillers: list[socket.socket] = []
        try:
            while True:
                conn = socket.socket(socket.AF_UNIX)
                conn.setblocking(False)
                try:
                    conn.connect(control)
                except BlockingIOError:
                    conn.close()
                    break
                fillers.append(conn)
            with Child(
                "-m", "shutdown_scope", "reload", "--control", control
            ) as asking:
                asking.wait_for("is busy; waiting")
                child.send(signal.SIGCONT)
                for conn in fillers:
                    conn.close()
                assert asking.finish() == 0
            assert "reload 1: generation 2" in asking.output
        finally:
            child.send(signal.SIGCONT)
            for conn in fillers:
                conn.close()
        child.send(signal.SIGTERM)
        assert child.finish() == 0


# -- the runtime directory -----------------------------------------------------------


def test_a_runtime_directory_remade_by_another_user_is_not_used(
    another_user: None, public_dir: Path
) -> None:
    """A tmp cleaner removed it; uid 65534 made one of that name, to block reloads."""
    env = {"TMPDIR": str(public_dir)}
    command = ("-m", "shutdown_scope", "run", "--listen", "127.0.0.1:0")
    with Launcher(*command, "--", sys.executable, LAUNCHED, "serve", env=env) as child:
        port = port_of(child)
        child.wait_for(") ready")
        (runtime,) = public_dir.iterdir()
        assert runtime.stat().st_uid == os.geteuid()
        assert stat.S_IMODE(runtime.stat().st_mode) == 0o700
        shutil.rmtree(runtime)
        planted = as_nobody(
            "sh",
            "-c",
            'mkdir -m 777 "$1" && touch "$1/notify-1" "$1/notify-2"',
            "-",
            str(runtime),
        )
        assert planted.returncode == 0, planted.stderr
        child.send(signal.SIGHUP)
        child.wait_for("reload 1: done")
        child.wait_for("gen 1 exiting")
        assert ask(port).startswith("gen 2 ")
        child.send(signal.SIGTERM)
        assert child.finish() == 0
    assert f"the runtime directory {runtime} is gone or no longer ours" in child.output
    # Left as its owner made it; the launcher's own directories are gone.
    assert list(public_dir.iterdir()) == [runtime]
    assert runtime.stat().st_uid == NOBODY
    assert sorted(x.name for x in runtime.iterdir()) == ["notify-1", "notify-2"]


def test_no_usable_temporary_directory_is_a_clear_error() -> None:
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None:
        pytest.skip("needs root and unshare, to mount read-only /tmp and /var/tmp")
    hidden = ("/tmp/", "/var/tmp/")  # noqa: S108 -- the directories it hides
    if any(
        str(Path(x).resolve()).startswith(hidden)
        for x in (sys.executable, shutdown_scope.__file__)
    ):
        pytest.skip("this Python or shutdown_scope lives under /tmp: hidden there")
    script = (
        "mount -t tmpfs -o ro none /tmp && mount -t tmpfs -o ro none /var/tmp"
        ' && cd /proc && exec "$@"'
    )
    launch = [sys.executable, "-m", "shutdown_scope", "run", "--", "true"]
    done = subprocess.run(
        [unshare, "--mount", "sh", "-c", script, "-", *launch],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "TMPDIR": "/proc"},
    )
    assert done.returncode == 1, done.stderr
    assert "shutdown-scope: cannot make the launcher's runtime directory" in (
        done.stderr
    )
    assert "Traceback" not in done.stderr


def test_the_runtime_directory_is_made_where_tempfile_would_make_it(
    public_dir: Path,
) -> None:
    """TMPDIR, TEMP, TMP in turn: one that is missing or not a directory is skipped."""
    usable = public_dir / "usable"
    usable.mkdir(mode=0o700)
    (public_dir / "a-file").touch()
    env = {
        "TMPDIR": str(public_dir / "missing"),
        "TEMP": str(public_dir / "a-file"),
        "TMP": str(usable),
    }
    command = ("-m", "shutdown_scope", "run", "--", sys.executable, LAUNCHED)
    with Launcher(*command, "serve", env=env) as child:
        child.wait_for(") ready")
        (runtime,) = usable.iterdir()
        assert re.fullmatch(r"shutdown-scope-[0-9a-f]{16}", runtime.name), runtime
        assert stat.S_IMODE(runtime.stat().st_mode) == 0o700
        assert runtime.stat().st_uid == os.geteuid()
        child.send(signal.SIGTERM)
        assert child.finish() == 0
    assert list(usable.iterdir()) == []
    assert sorted(x.name for x in public_dir.iterdir()) == ["a-file", "usable"]


def test_the_runtime_directory_is_removed_at_exit(public_dir: Path) -> None:
    env = {"TMPDIR": str(public_dir)}
    command = ("-m", "shutdown_scope", "run", "--", sys.executable, LAUNCHED)
    with Launcher(*command, "serve", env=env) as child:
        child.wait_for(") ready")
        child.send(signal.SIGHUP)
        child.wait_for("reload 1: done")
        child.send(signal.SIGTERM)
        assert child.finish() == 0
    assert list(public_dir.iterdir()) == []
