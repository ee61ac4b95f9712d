"""A missing optional dependency names the extra that installs it."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.subprocess


def import_without(missing: str, statement: str) -> subprocess.CompletedProcess[str]:
    """Run ``statement`` in a fresh interpreter where ``missing`` cannot be imported."""
    probe = f"import sys\nsys.modules[{missing!r}] = None\n{statement}\n"
    return subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize(
    ("missing", "statement", "extra"),
    [
        ("hypercorn", "import shutdown_scope.hypercorn", "hypercorn"),
        ("uvicorn", "import shutdown_scope.uvicorn", "uvicorn"),
        (
            "trio",
            (
                "import shutdown_scope\n"
                "async def main() -> None: ...\n"
                "shutdown_scope.run(main, backend='trio')"
            ),
            "trio",
        ),
    ],
)
def test_a_missing_extra_is_named(missing: str, statement: str, extra: str) -> None:
    result = import_without(missing, statement)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ModuleNotFoundError: "), result.stderr
    assert f'pip install "shutdown-scope[{extra}]"' in last


def test_the_core_needs_no_extra() -> None:
    statement = (
        "import shutdown_scope, shutdown_scope.asgi, shutdown_scope.systemd\n"
        "shutdown_scope.graceful_scope\n"
        "async def main() -> None: ...\n"
        "shutdown_scope.run(main)"
    )
    for missing in ("hypercorn", "uvicorn", "trio"):
        result = import_without(missing, statement)
        assert result.returncode == 0, result.stderr
