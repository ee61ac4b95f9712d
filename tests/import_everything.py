"""Import every public module of an installed shutdown_scope (``nox -s package``).

Run with the Python of a fresh virtualenv that has the wheel installed, from outside
the checkout, so the installed copy is what gets imported.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
import sys
from pathlib import Path

PUBLIC = (
    "shutdown_scope",
    "shutdown_scope.asgi",
    "shutdown_scope.hypercorn",
    "shutdown_scope.logging",
    "shutdown_scope.prometheus",
    "shutdown_scope.signals",
    "shutdown_scope.systemd",
    "shutdown_scope.tcp",
    "shutdown_scope.testing",
    "shutdown_scope.testing.http_load",
    "shutdown_scope.timeline",
    "shutdown_scope.uvicorn",
)


def main() -> None:
    """Import each module and check that it came from site-packages."""
    for name in PUBLIC:
        module = importlib.import_module(name)
        where = Path(module.__file__ or "")
        if "site-packages" not in where.parts:
            sys.exit(f"{name} was imported from {where}, not from the installed wheel")
    typed = Path(importlib.import_module("shutdown_scope").__file__ or "").parent
    if not (typed / "py.typed").is_file():
        sys.exit("the wheel has no py.typed")
    version = importlib.metadata.version("shutdown-scope")
    package_version = importlib.import_module("shutdown_scope").__version__
    if package_version != version:
        sys.exit(f"__version__ is {package_version}, the metadata says {version}")
    help_text = subprocess.run(
        [sys.executable, "-m", "shutdown_scope", "--help"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    if "run" not in help_text:
        sys.exit("shutdown-scope --help does not list the run command")
    print(f"shutdown-scope {version}: imported {', '.join(PUBLIC)}")  # noqa: T201 -- reports to nox


if __name__ == "__main__":
    main()
