"""The docs' reference pages against the code, so they cannot drift apart.

The docs build (``nox -s docs``, warnings as errors) checks the pages' links,
included programs and autodoc; these tests check what a build cannot: that
every key of a real report, every public name and module, and every
environment variable the code reads or sets is on its reference page.
"""

from __future__ import annotations

import pkgutil
import re
from pathlib import Path

import anyio
import pytest
from _services import NO_SIGNALS
from anyio.abc import TaskStatus

import shutdown_scope
from shutdown_scope import ShutdownReport, ShutdownToken, graceful_scope

DOCS = Path(__file__).parent.parent / "docs"
REFERENCE = DOCS / "reference"
PACKAGE = Path(shutdown_scope.__file__).parent
# A table row of docs/reference/report.rst: "   * - ``phases[].started``".
DOCUMENTED_KEY = re.compile(r"^\s+\* - ``([a-z_]+(?:\[\]\.[a-z_]+)?)``$", re.MULTILINE)
ENVIRONMENT = re.compile(
    r"\b(LISTEN_(?!VARIABLES\b)[A-Z]+|NOTIFY_SOCKET|WATCHDOG_[A-Z]+|SHUTDOWN_SCOPE_[A-Z_]*[A-Z])\b"
)


async def busy(
    token: ShutdownToken, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """In flight until cancelled: the report has phases, a service, a label."""
    task_status.started()
    with token.in_flight("GET /slow"):
        await anyio.sleep_forever()


async def a_real_report() -> ShutdownReport:
    async with graceful_scope(**NO_SIGNALS, drain_timeout=1, cancel_timeout=1) as scope:
        await scope.start(busy)
        scope.request_shutdown("test")
    return scope.report


def report_keys(data: dict[str, object]) -> set[str]:
    keys = set(data)
    for nested in ("phases", "services"):
        items = data[nested]
        assert isinstance(items, list)
        assert items, f"the report has no {nested}: the test must make some"
        for item in items:
            assert isinstance(item, dict)
            keys |= {f"{nested}[].{key}" for key in item}
    return keys


@pytest.mark.anyio
async def test_every_key_of_as_dict_is_documented(mock_clock: object) -> None:
    actual = report_keys((await a_real_report()).as_dict())
    documented = set(DOCUMENTED_KEY.findall((REFERENCE / "report.rst").read_text()))
    assert actual - documented == set(), "add these to docs/reference/report.rst"
    assert documented - actual == set(), "no longer in as_dict(): remove them"


def public_modules() -> set[str]:
    return {
        f"shutdown_scope.{info.name}"
        for info in pkgutil.iter_modules([str(PACKAGE)])
        if not info.name.startswith("_")
    }


def test_every_public_module_and_name_is_in_the_api_reference() -> None:
    api = (REFERENCE / "api.rst").read_text()
    automodules = set(re.findall(r"^\.\. automodule:: (\S+)$", api, re.MULTILINE))
    assert public_modules() | {"shutdown_scope"} <= automodules
    # The package's own names are listed one by one (its automodule shows
    # only the docstring), so each export needs its own entry.
    described = set(
        re.findall(r"^\.\. auto\w+:: shutdown_scope\.(\w+)$", api, re.MULTILINE)
    )
    assert set(shutdown_scope.__all__) - {"__version__"} <= described


def test_every_environment_variable_of_the_code_is_documented() -> None:
    used = {
        name
        for path in PACKAGE.rglob("*.py")
        for name in ENVIRONMENT.findall(path.read_text(encoding="utf-8"))
    }
    assert {"LISTEN_FDS", "NOTIFY_SOCKET", "SHUTDOWN_SCOPE_GENERATION"} <= used
    page = (REFERENCE / "environment.rst").read_text()
    documented = set(re.findall(r"``([A-Z][A-Z_]+)``", page))
    assert used - documented == set(), "add these to docs/reference/environment.rst"
