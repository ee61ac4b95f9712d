"""The pytest plugin as a user gets it: a fresh pytest run in an empty project.

Registered by the ``pytest11`` entry point, it must load nothing optional (a
user without the ``testing`` extra still runs pytest), load once even when also
named with ``-p``, and give the ``shutdown_rehearsal`` fixture.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = "shutdown_scope.testing.pytest_plugin"

pytestmark = pytest.mark.subprocess

INNER_TEST = """
import sys

OPTIONAL = {"h11", "hypercorn", "prometheus_client", "uvicorn"}
KIT = {"shutdown_scope.testing.http_load", "shutdown_scope.prometheus"}


def test_the_plugin_is_light(shutdown_rehearsal, pytestconfig):
    assert pytestconfig.pluginmanager.has_plugin("shutdown_scope.testing.pytest_plugin")
    assert not (OPTIONAL | KIT) & set(sys.modules)
    assert callable(shutdown_rehearsal)
"""

WITHOUT_H11 = """
import sys

import pytest


def test_a_rehearsal_without_h11_names_the_extra(shutdown_rehearsal):
    with pytest.raises(ImportError, match=r'pip install "shutdown-scope\\[testing\\]"'):
        shutdown_rehearsal([sys.executable, "-c", "pass"], url="http://127.0.0.1:1/")
"""


def _installed_with_entry_point() -> bool:
    return any(
        entry.name == PLUGIN
        for entry in importlib.metadata.entry_points(group="pytest11")
    )


needs_entry_point = pytest.mark.skipif(
    not _installed_with_entry_point(),
    reason="shutdown-scope is installed without its pytest11 entry point"
    ' (an install older than the plugin: pip install -e ".[test]" again)',
)


def run_pytest(
    project: Path, *args: str, prelude: str = "", autoload: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    if not autoload:
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    code = f"{prelude}import pytest, sys; sys.exit(pytest.main(sys.argv[1:]))"
    argv = [sys.executable, "-c", code, "-p", "no:cacheprovider", "-q", *args]
    return subprocess.run(
        [*argv, str(project)],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@needs_entry_point
@pytest.mark.parametrize("args", [(), ("-p", PLUGIN)], ids=["autoload", "also -p"])
def test_the_entry_point_loads_a_light_plugin_once(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    (tmp_path / "test_inner.py").write_text(INNER_TEST)
    done = run_pytest(tmp_path, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def test_without_autoload_it_is_named_with_p(tmp_path: Path) -> None:
    (tmp_path / "test_inner.py").write_text(INNER_TEST)
    done = run_pytest(tmp_path, "-p", PLUGIN, autoload=False)
    assert done.returncode == 0, done.stdout + done.stderr


@needs_entry_point
def test_without_h11_pytest_runs_and_a_rehearsal_names_the_extra(
    tmp_path: Path,
) -> None:
    (tmp_path / "test_inner.py").write_text(WITHOUT_H11)
    # A None entry in sys.modules makes `import h11` raise ImportError.
    done = run_pytest(tmp_path, prelude="import sys; sys.modules['h11'] = None; ")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
