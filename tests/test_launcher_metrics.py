"""``shutdown-scope run --metrics-file``: reloads by outcome, for Prometheus.

Read with prometheus_client's own parser of the text format, as node_exporter's
textfile collector would read it.
"""

from __future__ import annotations

import signal
import stat
import sys
from pathlib import Path

import pytest
from _spawn import Launcher
from prometheus_client.parser import text_string_to_metric_families

LAUNCHED = str(Path(__file__).with_name("_launched.py"))

pytestmark = pytest.mark.subprocess


def read_metrics(path: Path) -> tuple[dict[str, float], float]:
    """Reloads by outcome, and the serving generation."""
    reloads: dict[str, float] = {}
    generation = -1.0
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            if sample.name == "shutdown_scope_launcher_reloads_total":
                reloads[sample.labels["outcome"]] = sample.value
            elif sample.name == "shutdown_scope_launcher_generation":
                generation = sample.value
    return reloads, generation


def counts(done: int, failed: int, interrupted: int) -> dict[str, float]:
    return {"done": done, "failed": failed, "interrupted": interrupted}


def test_reloads_are_counted_by_outcome(tmp_path: Path) -> None:
    path = tmp_path / "launcher.prom"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("keep me")
    path.symlink_to(elsewhere)  # replaced, never written through
    # Generation 2 crashes, 3 serves, 4 never gets ready.
    with Launcher(
        "-m",
        "shutdown_scope",
        "run",
        "--listen",
        "127.0.0.1:0",
        "--metrics-file",
        str(path),
        "--debounce",
        "0",  # the SIGHUPs come in quick succession
        "--",
        sys.executable,
        LAUNCHED,
        "serve,crash,serve,hang",
    ) as child:
        child.wait_for("generation 1 (pid")
        child.wait_for(") ready")
        assert read_metrics(path) == (counts(0, 0, 0), 1)
        assert not path.is_symlink()
        assert elsewhere.read_text() == "keep me"
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        child.send(signal.SIGHUP)
        child.wait_for("reload 1 failed")
        assert read_metrics(path) == (counts(0, 1, 0), 1)
        child.send(signal.SIGHUP)
        child.wait_for("reload 2: done")
        assert read_metrics(path) == (counts(1, 1, 0), 3)
        child.send(signal.SIGHUP)
        child.wait_for("reload 3: generation 4 (pid")
        child.send(signal.SIGTERM)
        assert child.finish() == 0, child.output
    assert read_metrics(path) == (counts(1, 1, 1), 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "launcher.prom"]


@pytest.mark.parametrize(
    ("where", "why"),
    [("missing/launcher.prom", "No such file"), ("a directory", "Is a directory")],
)
def test_a_metrics_file_that_cannot_be_written_stops_the_launcher_at_once(
    tmp_path: Path, where: str, why: str
) -> None:
    path = tmp_path / where
    if where == "a directory":
        path.mkdir()
    with Launcher(
        "-m",
        "shutdown_scope",
        "run",
        "--metrics-file",
        str(path),
        "--",
        sys.executable,
        LAUNCHED,
        "serve",
    ) as child:
        code = child.finish()
    assert code == 1
    assert f"cannot write --metrics-file {path}: {why}" in child.output
    assert "generation 1" not in child.output
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
