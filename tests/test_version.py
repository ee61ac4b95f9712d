"""One version (shutdown_scope/_version.py): the metadata, the package, the command."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest

import shutdown_scope
from shutdown_scope._launcher._cli import main


def test_the_package_and_the_metadata_agree() -> None:
    assert shutdown_scope.__version__ == importlib.metadata.version("shutdown-scope")


def test_the_command_prints_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"shutdown-scope {shutdown_scope.__version__}\n"


@pytest.mark.subprocess
def test_version_loads_no_event_loop() -> None:
    probe = (
        "import sys\n"
        "from shutdown_scope._launcher import main\n"
        "try:\n"
        "    main(['--version'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('anyio', 'asyncio', 'trio') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True
    ).stdout
    assert out.splitlines() == [f"shutdown-scope {shutdown_scope.__version__}", "[]"]
