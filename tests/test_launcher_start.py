"""The launcher's start: what it imports, and that it catches signals first.

The time it takes is measured in ``bench/launcher_start.py``, not here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from _spawn import Launcher
from test_launcher import LAUNCHED

import shutdown_scope

pytestmark = pytest.mark.subprocess

HEAVY = {"anyio", "asyncio", "trio", "sniffio", "typing_extensions"}


def imported(*argv: str) -> list[str]:
    """The modules ``python -X importtime ARGV`` imported, in the order they ended."""
    # Without coverage's start-up hook (``nox -s tests`` measures children): it
    # imports modules of its own (typing, ...) before ours.
    hook = {"COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START"}
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if k not in hook},
    )
    assert result.returncode == 0, result.stderr
    lines = [x for x in result.stderr.splitlines() if x.startswith("import time:")]
    return [line.rsplit("|", 1)[1].strip() for line in lines[1:]]  # [0]: header


@pytest.mark.parametrize(
    "argv",
    [
        ("-m", "shutdown_scope", "run", "--help"),
        ("-m", "shutdown_scope", "reload", "--help"),
        ("-c", "import shutdown_scope._launcher._cli"),
        ("-c", "import shutdown_scope.systemd"),
    ],
)
def test_the_launcher_imports_no_event_loop(argv: tuple[str, ...]) -> None:
    modules = imported(*argv)
    assert "shutdown_scope" in modules
    assert not [m for m in modules if m.split(".")[0] in HEAVY]


def test_run_catches_signals_before_it_imports_its_command_line() -> None:
    modules = imported("-m", "shutdown_scope", "run", "--help")
    inbox = modules.index("shutdown_scope._launcher._signal_inbox")
    assert modules.index("argparse") > inbox
    assert modules.index("shutdown_scope._launcher._cli") > inbox
    assert "typing" not in modules[:inbox]  # a slow import, not needed that early


# Runs ``python -m shutdown_scope ARGV`` with the import of the launcher's command
# line held until the file named by SHUTDOWN_SCOPE_TEST_GO exists: a SIGTERM sent
# meanwhile arrives while the launcher is still starting.
HELD_IMPORT = """
import importlib.abc, os, runpy, sys, time
from pathlib import Path

class Hold(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "shutdown_scope._launcher._cli":
            print("importing the command line", flush=True)
            go = Path(os.environ["SHUTDOWN_SCOPE_TEST_GO"])
            while not go.exists():
                time.sleep(0.01)
        return None

sys.meta_path.insert(0, Hold())
sys.argv = ["shutdown-scope", *sys.argv[1:]]
runpy.run_module("shutdown_scope", run_name="__main__", alter_sys=True)
"""


def test_a_sigterm_during_the_start_is_kept_and_forwarded(tmp_path: Path) -> None:
    go = tmp_path / "go"
    argv = ("run", "--", sys.executable, LAUNCHED, "serve")
    env = {"SHUTDOWN_SCOPE_TEST_GO": str(go)}
    with Launcher("-c", HELD_IMPORT, *argv, env=env) as child:
        child.wait_for("importing the command line")
        child.send(signal.SIGTERM)
        go.touch()
        code = child.finish()
    assert code != -signal.SIGTERM, child.output  # not killed by it: caught
    child.assert_in_order("generation 1 (pid", "stopping (received SIGTERM)")
    # The generation may get it before its own handler is installed.
    assert code in {0, 128 + signal.SIGTERM}, child.output


# -- the package's lazy names (PEP 562) ----------------------------------------------


def test_every_public_name_is_there_and_listed() -> None:
    program = (
        "import sys, shutdown_scope as s\n"
        "assert 'anyio' not in sys.modules, 'imported too early'\n"
        "assert set(s.__all__) <= set(dir(s)), dir(s)\n"
        "values = [getattr(s, name) for name in s.__all__]\n"
        "assert 'anyio' in sys.modules\n"
        "from shutdown_scope._scope import graceful_scope\n"
        "assert s.graceful_scope is graceful_scope\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'graceful'"):
        _ = shutdown_scope.graceful  # type: ignore[attr-defined]
    with pytest.raises(ImportError, match="cannot import name 'graceful'"):
        from shutdown_scope import graceful  # type: ignore[attr-defined]  # noqa: F401
