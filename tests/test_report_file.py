"""SHUTDOWN_SCOPE_REPORT_FILE: run() leaves the report that decided its exit code.

And ``shutdown_scope.testing.report_from_dict`` brings it back as a report.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import TaskStatus

from shutdown_scope import Phase, ShutdownReport, ShutdownToken, run
from shutdown_scope.testing import (
    ReportedError,
    graceful_test_scope,
    read_report,
    report_from_dict,
)

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup

BACKENDS = pytest.mark.parametrize("backend", ["asyncio", "trio"])
VARIABLE = "SHUTDOWN_SCOPE_REPORT_FILE"


async def lose_work() -> ShutdownReport:
    async def busy(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        with token.in_flight("job"):
            task_status.started()
            await anyio.sleep_forever()

    async with graceful_test_scope(drain_timeout=0) as scope:
        await scope.start(busy, name="worker")
        scope.request_shutdown("deploy")
    return scope.report


def run_exit_code(main: Any, *args: object, backend: str = "asyncio") -> object:
    with pytest.raises(SystemExit) as exited:
        run(main, *args, backend=backend)
    return exited.value.code


@BACKENDS
def test_the_report_is_written_as_json_with_mode_0600(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    path = tmp_path / "report.json"
    monkeypatch.setenv(VARIABLE, str(path))
    seen: list[ShutdownReport] = []

    async def main() -> None:
        seen.append(await lose_work())

    assert run_exit_code(main, backend=backend) == 1
    assert json.loads(path.read_text()) == seen[0].as_dict()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary


def test_the_variable_is_not_passed_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Processes started by main (workers, subprocesses) must not overwrite it."""
    monkeypatch.setenv(VARIABLE, str(tmp_path / "report.json"))
    inside: list[str | None] = []

    async def main() -> None:
        inside.append(os.environ.get(VARIABLE))

    assert run_exit_code(main) == 0
    assert inside == [None]
    assert VARIABLE not in os.environ


def test_a_relative_path_is_taken_from_the_starting_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(VARIABLE, "report.json")
    (tmp_path / "elsewhere").mkdir()

    async def main() -> None:
        os.chdir(tmp_path / "elsewhere")
        await lose_work()

    assert run_exit_code(main) == 1
    report = read_report(tmp_path / "report.json")
    assert report.cancelled_in_flight == ("worker: job",)


def test_a_symlink_at_the_path_is_replaced_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "precious"
    target.write_text("keep me")
    link = tmp_path / "report.json"
    link.symlink_to(target)
    monkeypatch.setenv(VARIABLE, str(link))
    assert run_exit_code(lose_work) == 1
    assert target.read_text() == "keep me"
    assert not link.is_symlink()
    assert read_report(link).exit_code == 1


def test_the_report_is_written_when_main_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "report.json"
    monkeypatch.setenv(VARIABLE, str(path))

    async def main() -> None:
        async with graceful_test_scope():
            raise KeyError("boom")

    with pytest.raises(ExceptionGroup):
        run(main)
    report = read_report(path)
    assert not report.clean
    assert [str(e) for e in report.errors] == ["KeyError: 'boom'"]
    assert all(isinstance(e, ReportedError) for e in report.errors)


def test_no_scope_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "report.json"
    monkeypatch.setenv(VARIABLE, str(path))

    async def main() -> None:
        pass

    assert run_exit_code(main) == 0
    assert not path.exists()


@pytest.mark.parametrize("where", ["missing directory", "a directory"])
def test_an_unwritable_path_is_logged_and_the_exit_code_kept(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    where: str,
) -> None:
    path = tmp_path / "no" / "report.json" if where == "missing directory" else tmp_path
    monkeypatch.setenv(VARIABLE, str(path))
    with caplog.at_level(logging.ERROR, logger="shutdown_scope"):
        assert run_exit_code(lose_work) == 1
    (record,) = [r for r in caplog.records if "cannot write the report" in r.message]
    assert str(path) in record.message
    assert "\n" not in record.message
    if where == "a directory":
        assert sorted(p.name for p in tmp_path.iterdir()) == []  # no temporary left


@pytest.mark.anyio
async def test_a_report_comes_back_from_its_dict() -> None:
    report = await lose_work()
    again = report_from_dict(json.loads(json.dumps(report.as_dict())))
    assert again == report
    assert again.as_dict() == report.as_dict()
    assert again.phase(Phase.CANCELLING) is not None
    assert str(again) == str(report)


def _report_dict() -> dict[str, Any]:
    return {
        "trigger": "signal",
        "reason": "received SIGTERM",
        "signal": 15,
        "signals_received": 1,
        "clean": True,
        "exit_code": 0,
        "duration": 0.5,
        "phases": [
            {"phase": "STOPPING", "started": 0, "duration": 0.1, "in_flight": []},
        ],
        "services": [
            {
                "name": "http",
                "outcome": "returned",
                "stop_requested_at": 0.0,
                "finished_at": 0.4,
                "cancelled_in_flight": [],
                "error": None,
            }
        ],
        "errors": [],
    }


def test_a_valid_dict_gives_its_report() -> None:
    report = report_from_dict(_report_dict())
    assert report.clean
    assert report.services[0].finished_at == 0.4


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda d: d.pop("trigger"), "missing 'trigger'"),
        (lambda d: d.update(trigger="boredom"), "'trigger' is 'boredom'"),
        (lambda d: d.update(signal="15"), "'signal' is '15'"),
        (lambda d: d.update(signal=True), "'signal' is True"),
        (lambda d: d.update(duration=float("nan")), "'duration' is NaN"),
        (lambda d: d.update(duration="1"), "'duration' is '1'"),
        (lambda d: d.update(phases={}), "'phases' is"),
        (lambda d: d["phases"][0].update(phase="NAPPING"), "'phase' is 'NAPPING'"),
        (lambda d: d["phases"][0].update(in_flight=[1]), "'in_flight' holds a label"),
        (lambda d: d["services"][0].update(outcome="won"), "'outcome' is 'won'"),
        (lambda d: d["services"][0].update(error=3), "'error' is 3"),
        (lambda d: d["services"][0].pop("name"), "missing 'name'"),
        (lambda d: d.update(errors="x"), "'errors' is 'x'"),
    ],
)
def test_a_bad_dict_is_refused_with_the_reason(change: Any, match: str) -> None:
    data = _report_dict()
    change(data)
    with pytest.raises(ValueError, match=f"not the dict of a ShutdownReport: {match}"):
        report_from_dict(data)


@pytest.mark.parametrize("text", ["{", "[]", "null"])
def test_a_file_without_a_report_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "report.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"report\.json: not"):
        read_report(path)
