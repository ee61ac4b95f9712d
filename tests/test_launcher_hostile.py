"""The launcher against children and clients that lie, race or misbehave.

Real processes, signals and sockets; helpers come from tests/test_launcher.py.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _spawn import TIMEOUT, Launcher
from test_launcher import LAUNCHED, ask, launcher, port_of
from test_launcher_access import NOBODY, as_nobody
from test_launcher_notify import heard, supervisor_socket

pytestmark = pytest.mark.subprocess

RUN = ("-m", "shutdown_scope", "run", "--", sys.executable, LAUNCHED)


def _is_zombie(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _continue_once_dead(child: Launcher, pid: int) -> None:
    """``readyexit`` stopped the launcher, notified and exited: once ``pid`` is a
    zombie, let the launcher go on; it finds the words and the exit at once."""
    deadline = time.monotonic() + TIMEOUT
    while not _is_zombie(pid):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    child.send(signal.SIGCONT)


def test_a_successor_dead_by_the_time_its_ready_is_read_does_not_take_over() -> None:
    """READY=1 and the exit reach the launcher together: the exit counts, and
    the old generation is not stopped for a successor that no longer runs."""
    with launcher("--listen", "127.0.0.1:0", behaviour="serve,readyexit") as child:
        port = port_of(child)
        child.wait_for(") ready")
        child.send(signal.SIGHUP)
        successor = int(child.wait_for("gen 2 pid").split()[3])
        _continue_once_dead(child, successor)
        child.wait_for("reload 1 failed")
        assert ask(port).startswith("gen 1 ")
        child.send(signal.SIGTERM)
        assert child.finish() == 0
    assert "exited as soon as it was ready: exit code 4" in child.output
    assert child.output.count("gen 1 got SIGTERM") == 1


def test_what_a_generation_said_just_before_it_exited_is_still_relayed() -> None:
    with supervisor_socket() as (address, manager):
        env = {"NOTIFY_SOCKET": address}
        with Launcher(*RUN, "readyexit", env=env) as child:
            pid = int(child.wait_for("gen 1 pid").split()[3])
            _continue_once_dead(child, pid)
            assert child.finish() == 4
        assert b"STATUS=last words" in heard(manager)


@pytest.mark.parametrize("how", ["owned by another user", "writable by all"])
def test_a_tmpdir_another_user_can_change_is_refused(tmp_path: Path, how: str) -> None:
    """There, another user could move the runtime directory away (each
    successor's READY=1 then goes nowhere: every reload fails) or put their own
    in its place, to hear the generations' notifications."""
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    if how == "writable by all":
        theirs.chmod(0o777)  # and not sticky
    elif os.geteuid() != 0:
        pytest.skip("needs root, to give the directory to another uid")
    else:
        theirs.chmod(0o755)
        os.chown(theirs, NOBODY, NOBODY)
    command = ("-m", "shutdown_scope", "run", "--", sys.executable, LAUNCHED)
    with Launcher(*command, "serve", env={"TMPDIR": str(theirs)}) as child:
        assert child.finish() == 1
    assert f"cannot make the launcher's runtime directory in {theirs}" in child.output
    assert "Traceback" not in child.output
    assert "gen 1" not in child.output  # nothing started
    assert list(theirs.iterdir()) == []


def test_a_storm_of_orphans_is_reaped_and_counted_not_logged_one_by_one() -> None:
    with launcher(behaviour="orphans") as child:
        child.wait_for("gen 1 made 200 orphans")
        child.wait_for(") ready")
        child.send(signal.SIGTERM)
        assert child.finish() == 0
    assert child.output.count("reaped orphan pid") == 3
    # All 200, unless the last ones had not yet exited when the launcher did.
    counted = re.search(r"(\d+) orphans reaped in all", child.output)
    assert counted is not None
    assert 3 < int(counted.group(1)) <= 200


@pytest.fixture
def setuid_root_setpriv() -> Iterator[Path]:
    """A set-user-ID-root copy of setpriv that uid 65534 can run (its command
    then runs as root, out of reach of an unprivileged launcher's signals),
    and a FIFO beside it that anyone may open."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv, to make a setuid program")
    directory = Path(tempfile.mkdtemp(prefix="launcher-hostile-"))
    try:
        directory.chmod(0o755)
        copy = directory / "setpriv"
        shutil.copy(setpriv, copy)
        copy.chmod(0o4755)
        os.mkfifo(directory / "fifo")
        (directory / "fifo").chmod(0o666)
        probe = as_nobody(str(copy), "--reuid=0", "--regid=0", "--clear-groups", "id")
        if probe.returncode != 0 or "uid=0" not in probe.stdout:
            pytest.skip(f"a setuid program does not run here: {probe.stderr}")
        probe = as_nobody(sys.executable, "-c", "import shutdown_scope")
        if probe.returncode != 0:
            pytest.skip(f"uid {NOBODY} cannot import shutdown_scope: {probe.stderr}")
        yield copy
    finally:
        shutil.rmtree(directory)


def test_a_group_left_to_processes_of_another_uid_does_not_crash_the_launcher(
    setuid_root_setpriv: Path,
) -> None:
    """The child starts a helper that becomes root, then exits: the launcher
    (uid 65534) may not signal what is left of its group; it says so and ends."""
    fifo = setuid_root_setpriv.with_name("fifo")
    become_root = f"{setuid_root_setpriv} --reuid=0 --regid=0 --clear-groups"
    script = (
        f"{become_root} sh -c 'echo root $$ > {fifo}; exec sleep 60' >/dev/null 2>&1 &"
        f' read line < {fifo}; echo "$line"'
    )
    setpriv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    with Launcher(
        "-c",
        # As uid 65534, coverage (nox -s tests measures children) could not save
        # its data at exit: the launcher runs without its start-up hook.
        "import os, sys;"
        " [os.environ.pop(k, None) for k in ('COVERAGE_PROCESS_CONFIG',"
        " 'COVERAGE_PROCESS_START')];"
        " os.execvp(sys.argv[1], sys.argv[1:])",
        *setpriv,
        sys.executable,
        "-m",
        "shutdown_scope",
        "run",
        "--grace-period",
        "1",
        "--",
        "sh",
        "-c",
        script,
    ) as child:
        helper = int(child.wait_for("root ").split()[1])
        try:
            assert child.finish() == 0
        finally:
            os.kill(helper, signal.SIGKILL)
    assert "Traceback" not in child.output
    assert "process group: its processes run as another user" in child.output
