"""The launcher's start and exit paths: what comes before the child, what is skipped.

How long they take is measured in ``bench/launcher_overhead.py``, not here.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from _spawn import Child, Launcher

pytestmark = pytest.mark.subprocess

# ``python -c THIS run ...``: the launcher as the command, with an object whose
# finalizer only the interpreter's teardown runs, and an atexit handler.
TEARDOWN_SEEN = """
import atexit, sys

class Teardown:
    def __del__(self):
        print("teardown ran", flush=True)

kept = Teardown()
atexit.register(print, "atexit ran", flush=True)
sys.argv = ["shutdown-scope", *sys.argv[1:]]
from shutdown_scope._launcher import main
main()
"""


@pytest.mark.parametrize(
    ("script", "code"),
    [("exit 3", 3), ("kill -TERM $$", 128 + signal.SIGTERM)],
    ids=["exit-code", "killed-by-signal"],
)
def test_run_exits_without_the_interpreter_teardown(script: str, code: int) -> None:
    with Child("-c", TEARDOWN_SEEN, "run", "--", "sh", "-c", script) as child:
        assert child.finish() == code, child.output
    assert "atexit ran" in child.lines, child.output  # what an exit must still do
    assert "teardown ran" not in child.lines, child.output  # what it skips
    # Its own last line is out before it leaves (stderr flushed).
    last = r"shutdown-scope: stopping \(generation 1 \(pid \d+\) exited\)"
    assert any(re.fullmatch(last, line) for line in child.lines), child.output


def test_main_called_with_arguments_still_returns() -> None:
    program = (
        "from shutdown_scope._launcher import main\n"
        "code = main(['run', '--', 'sh', '-c', 'exit 5'])\n"
        "print('returned', code, flush=True)\n"
    )
    with Child("-c", program) as child:
        assert child.finish() == 0, child.output
    assert "returned 5" in child.lines, child.output


# ``python -c THIS run ...``: when the launcher imports its supervisor (its loop,
# reloads, probes, control protocol), prints its children and which slow or
# optional modules it has loaded by then (each costs milliseconds of the start).
AT_SUPERVISOR_IMPORT = """
import os, sys

LATE = ["typing", "dataclasses", "pathlib", "shutdown_scope._launcher._control",
        "shutdown_scope._launcher._metrics_file",
        "tempfile", "random", "shutil", "bz2", "lzma"]

class Watch:  # not importlib.abc's: that module imports typing
    @staticmethod
    def find_spec(name, path, target=None):
        if name == "shutdown_scope._launcher._supervisor":
            pid = os.getpid()
            with open(f"/proc/{pid}/task/{pid}/children") as children:
                print("children:", *children.read().split(), flush=True)
            print("loaded:", *[m for m in LATE if m in sys.modules], flush=True)
        return None

sys.meta_path.insert(0, Watch)
sys.argv = ["shutdown-scope", *sys.argv[1:]]
from shutdown_scope._launcher import main
main()
"""


@pytest.mark.skipif(
    not Path("/proc/self/task").is_dir(), reason="needs Linux /proc children lists"
)
def test_the_first_generation_starts_before_the_supervisor_is_imported() -> None:
    program = AT_SUPERVISOR_IMPORT
    argv = ("run", "--listen", "127.0.0.1:0", "--", "sh", "-c", "exit 4")
    # Without coverage's start-up hook: it imports typing itself.
    hook = {"COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START"}
    result = subprocess.run(
        [sys.executable, "-c", program, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if k not in hook},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 4, output
    started = re.search(r"generation 1 \(pid (\d+)\) started", result.stderr)
    assert started is not None, output
    # An exited child stays in the list until reaped: its exit does not race this.
    lines = result.stdout.splitlines()
    assert f"children: {started.group(1)}" in lines, output
    assert "loaded:" in lines, output  # none of them yet


@pytest.mark.parametrize(
    "option",
    ["--metrics-file", "--pid-file", "--control"],
)
def test_a_setup_error_still_stops_the_start_before_the_child_runs(
    option: str, tmp_path: Path
) -> None:
    ran = tmp_path / "ran"
    bad = str(tmp_path / "no-such-dir" / "file")
    argv = ("run", option, bad, "--", "touch", str(ran))
    with Child("-m", "shutdown_scope", *argv) as child:
        assert child.finish() == 1, child.output
    assert "started" not in child.output, child.output
    assert not ran.exists()


def test_a_launcher_stopped_at_once_stops_its_child_too() -> None:
    # SIGTERM may arrive before the supervisor's loop exists: kept, then forwarded.
    argv = ("run", "--", sys.executable, "-c", "import time; time.sleep(30)")
    with Launcher("-m", "shutdown_scope", *argv) as child:
        child.wait_for(") started")
        child.send(signal.SIGTERM)
        assert child.finish() == 128 + signal.SIGTERM, child.output
    child.assert_in_order(") started", "stopping (received SIGTERM)", "exited")


def test_a_first_generation_abandoned_is_killed_and_reaped(tmp_path: Path) -> None:
    """What the launcher does when it cannot build its supervisor (after the start)."""
    # (The supervisor itself cannot be made to fail without a stand-in: its one
    # system call, epoll_create, has the two fds the spawn just gave back.)
    from shutdown_scope._launcher._children import Children
    from shutdown_scope._launcher._first_start import _abandon
    from shutdown_scope._launcher._options import Options

    # SIGTERM ignored (kept across the exec): only SIGKILL ends it at once.
    command = ["sh", "-c", 'trap "" TERM; exec sleep 30']
    children = Children(Options(command=command), [], environ=dict(os.environ))
    first = children.current = children.start_generation()
    (worker,) = first.workers
    notify_socket = Path(worker.inbox.path)
    assert notify_socket.exists()
    _abandon(children, first)
    with pytest.raises(ChildProcessError):
        os.waitpid(worker.pid, os.WNOHANG)  # reaped already
    assert worker.inbox.sock.fileno() == -1  # its notify socket closed
    assert not notify_socket.parent.exists()  # the runtime directory too


@pytest.mark.parametrize("columns", [50, 120])
def test_help_is_still_wrapped_to_the_terminal_width(columns: int) -> None:
    # The launcher gives argparse the width itself (not through shutil).
    result = subprocess.run(
        [sys.executable, "-m", "shutdown_scope", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": str(columns)},
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout
    options = text[text.index("options:") : text.index("signals:")]  # no raw epilog
    widths = [len(line) for line in options.splitlines()]
    assert max(widths) <= columns - 2, result.stdout
    assert max(widths) > columns - 12, result.stdout  # filled, not narrower
