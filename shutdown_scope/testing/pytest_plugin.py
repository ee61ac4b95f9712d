"""The pytest plugin of ``shutdown_scope.testing``: the ``shutdown_rehearsal`` fixture.

Installing shutdown-scope registers it (entry point ``pytest11``, named after
this module; with ``PYTEST_DISABLE_PLUGIN_AUTOLOAD`` set, load it with ``-p
shutdown_scope.testing.pytest_plugin``). Loading it imports no optional
dependency: h11 is imported when a rehearsal runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ._rehearsal import rehearse
from ._result import Rehearsal

__all__ = ["shutdown_rehearsal"]


@pytest.fixture
def shutdown_rehearsal(request: pytest.FixtureRequest) -> Callable[..., Rehearsal]:
    """``shutdown_scope.testing.rehearse``, from the project's root directory.

    Runs each server in the root directory unless ``cwd=`` says otherwise, and
    adds its output to the report of the test, shown if it fails::

        def test_sigterm_loses_nothing(shutdown_rehearsal):
            rehearsal = shutdown_rehearsal(
                [sys.executable, "app.py", "--port", "{port}"],
                url="http://127.0.0.1:{port}/",
            )
            assert rehearsal.lost == 0 and rehearsal.report.clean
    """
    count = 0

    def run(command: list[str], **options: Any) -> Rehearsal:
        nonlocal count
        options.setdefault("cwd", request.config.rootpath)
        rehearsal = rehearse(command, **options)
        count += 1
        request.node.add_report_section(
            "call", f"shutdown rehearsal {count}", f"{rehearsal}\n{rehearsal.output}"
        )
        return rehearsal

    return run
