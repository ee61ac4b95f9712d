"""Zero-downtime reload of a real hypercorn app, under load, on both hypercorn workers.

``shutdown-scope run --listen 127.0.0.1:0`` runs examples/hypercorn_app.py (which
serves the socket it is handed); 32 keep-alive clients (examples/http_load.py) run
while ``shutdown-scope reload --control`` replaces it. Which generation answered is
not in the answers: it is read from the launcher's log, where each generation's
lifespan line (``N read, M answered``, printed as it stops) comes before the
launcher's ``generation K (pid P) exited``. The tests wait for one old generation to
exit before the next reload, so no two of those lines interleave.
"""

from __future__ import annotations

import contextlib
import functools
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from _spawn import Child, Launcher

EXAMPLES = Path(__file__).parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))
from http_load import LoadStats, run_load  # noqa: E402

APP = str(EXAMPLES / "hypercorn_app.py")

pytestmark = [
    pytest.mark.subprocess,
    pytest.mark.parametrize("backend", ["asyncio", "trio"]),
]

CLIENTS = 32
TARGET = "/work?ms=5"
# Answers the clients get before the first reload, and after each old generation
# has exited (so from its successors) before the next step.
WARM_UP = 300
AFTER_EXIT = 200
# How long the clients may go without reaching such a count: far more than any
# reload takes; a test that needs it has failed.
STALL = 10.0

COUNTS = re.compile(r"lifespan: shutdown; /work requests: (\d+) read, (\d+) answered")
EXITED = re.compile(r"shutdown-scope: generation (\d+) \(pid \d+\) exited: (.*)")
RETIRED = re.compile(r"; (generation \d+ \(pid \d+\)) sent SIGTERM")


@contextlib.contextmanager
def launched(tmp_path: Path, *command: str) -> Iterator[tuple[Launcher, str, str]]:
    """The launcher running ``command``; its URL and control socket, once ready."""
    control = str(tmp_path / "control")
    with Launcher(
        "-m",
        "shutdown_scope",
        "run",
        "--listen",
        "127.0.0.1:0",
        "--control",
        control,
        "--",
        *command,
    ) as child:
        line = child.wait_for("shutdown-scope: listening on 127.0.0.1:")
        port = re.search(r"127\.0\.0\.1:(\d+) ", line)
        assert port is not None, line
        child.wait_for("generation 1 (pid")
        child.wait_for(") ready")
        yield child, f"http://127.0.0.1:{port[1]}", control


def app(backend: str) -> list[str]:
    return [sys.executable, APP, "--backend", backend, "--drain-timeout", "10"]


def reload_command(control: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shutdown_scope", "reload", "--control", control],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def wait_answers(stats: LoadStats, count: int) -> None:
    """Until the clients have ``count`` answers; fails after ``STALL`` seconds."""
    with anyio.move_on_after(STALL):
        while stats.answered < count:  # noqa: ASYNC110 -- polling our own counter
            await anyio.sleep(0.01)
        return
    msg = f"the clients stalled short of {count} answers: {stats.summary()}"
    raise AssertionError(msg)


def under_load(
    child: Launcher, url: str, control: str, reloads: int
) -> tuple[LoadStats, list[subprocess.CompletedProcess[str]], list[int]]:
    """Reload ``reloads`` times under load, each once the last old one has exited.

    Returns the clients' stats, each reload's result and, for each reload that
    worked, how many answers the clients had once the old generation had exited.
    """
    stats = LoadStats()
    results: list[subprocess.CompletedProcess[str]] = []
    at_exit: list[int] = []
    going = [True]

    async def drive() -> None:
        async with anyio.create_task_group() as tg:
            load = functools.partial(
                run_load,
                url + TARGET,
                clients=CLIENTS,
                stats=stats,
                while_=lambda: bool(going),
            )
            tg.start_soon(load)
            await wait_answers(stats, WARM_UP)
            for _ in range(reloads):
                result = await anyio.to_thread.run_sync(reload_command, control)
                results.append(result)
                retired = RETIRED.search(result.stderr)
                if result.returncode == 0 and retired:
                    exited = f"shutdown-scope: {retired[1]} exited"
                    await anyio.to_thread.run_sync(child.wait_for, exited)
                    at_exit.append(stats.answered)
                await wait_answers(stats, stats.answered + AFTER_EXIT)
            going.clear()

    anyio.run(drive)
    return stats, results, at_exit


def by_generation(child: Child) -> dict[int, tuple[int, int]]:
    """Each exited generation's ``(read, answered)``: the last lifespan line before
    the launcher says it exited (with code 0)."""
    found: dict[int, tuple[int, int]] = {}
    last: tuple[int, int] | None = None
    for line in child.lines:
        if counts := COUNTS.search(line):
            last = int(counts[1]), int(counts[2])
        elif exited := EXITED.search(line):
            assert exited[2] == "exit code 0", child.output
            assert last is not None, child.output
            found[int(exited[1])], last = last, None
    return found


def test_reloads_under_load_lose_nothing(tmp_path: Path, backend: str) -> None:
    reloads = 3
    with launched(tmp_path, *app(backend)) as (child, url, control):
        stats, results, at_exit = under_load(child, url, control, reloads)
        child.send(signal.SIGTERM)
        assert child.finish() == 0, child.output
    for number, result in enumerate(results, start=1):
        assert result.returncode == 0, result.stderr
        assert f"reload {number}: generation {number + 1} (pid" in result.stderr
        assert f"ready; generation {number} (pid" in result.stderr
    assert len(results) == reloads
    assert stats.lost == 0, stats.summary()
    assert stats.refused == 0, stats.summary()
    assert set(stats.statuses) == {200}, stats.statuses
    # The old generations moved the clients off: Connection: close, or their
    # idle keep-alive connections closed (requests never read: see below).
    assert stats.closed_by_server + stats.closed_idle > 0, stats.summary()

    apps = by_generation(child)
    assert sorted(apps) == [1, 2, 3, 4], child.output
    read = sum(r for r, _ in apps.values())
    answered = sum(a for _, a in apps.values())
    # Every request an app read was answered, and every answer reached a client.
    assert read == answered == stats.answered, (apps, stats.summary())
    # After generation K exited, the clients' answers came from its successors:
    # all of them but, per client, the one answer K may have sent before it exited
    # that the client had not yet read.
    for number, answers_then in enumerate(at_exit, start=1):
        later = sum(a for gen, (_, a) in apps.items() if gen > number)
        assert later >= stats.answered - answers_then - CLIENTS, (apps, at_exit)
        assert apps[number + 1][1] > 0, apps


def test_a_successor_that_fails_leaves_generation_1_serving(
    tmp_path: Path, backend: str
) -> None:
    # Generation 2 exits with 3 before it is ready; the others run the app.
    wrapper = 'test "$SHUTDOWN_SCOPE_GENERATION" = 2 && exit 3; exec "$0" "$@"'
    with launched(tmp_path, "sh", "-c", wrapper, *app(backend)) as launcher:
        child, url, control = launcher
        first = child.lines[child.index("generation 1 (pid")]
        generation_1 = re.search(r"generation 1 \(pid \d+\)", first)
        assert generation_1 is not None
        stats, results, at_exit = under_load(child, url, control, 1)
        child.send(signal.SIGTERM)
        assert child.finish() == 0, child.output
    (result,) = results
    assert result.returncode == 1, result.stderr
    assert "reload 1: generation 2 (pid" in result.stderr
    assert "exited before it was ready: exit code 3" in result.stderr
    assert f"{generation_1[0]} keeps serving" in result.stderr
    assert at_exit == []
    assert stats.lost == 0, stats.summary()
    assert stats.refused == 0, stats.summary()
    assert set(stats.statuses) == {200}, stats.statuses
    # Generation 1 answered everything, before and after the failed reload.
    assert by_generation(child) == {1: (stats.answered, stats.answered)}, child.output
    assert stats.answered >= WARM_UP + AFTER_EXIT
