"""``shutdown-scope run --workers N``: N processes per generation on the same sockets.

The workers are ``tests/_launched.py`` (its tag is ``gen N worker I``), except in
the test under load, where they are ``shutdown-scope serve`` with a real app.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import socket
import sys
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from _spawn import Launcher
from test_launcher import ask, launcher, port_of, reload_command, wait_for_all

from shutdown_scope._launcher import main
from shutdown_scope._launcher._parser import command_parser

EXAMPLES = Path(__file__).parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))
from http_load import LoadStats, run_load  # noqa: E402

pytestmark = pytest.mark.subprocess

WORKER = re.compile(r"generation (\d+) worker (\d+) \(pid (\d+)\)")


def worker_pids(output: str, generation: int = 1) -> dict[int, int]:
    """Each worker's latest pid in ``generation``, from the launcher's log."""
    return {
        int(index): int(pid)
        for gen, index, pid in WORKER.findall(output)
        if int(gen) == generation
    }


def answered_by_both(port: int, generation: int = 1) -> set[str]:
    """Connect until both workers have answered (they share one accept queue)."""
    seen: set[str] = set()
    for _ in range(400):
        answer = ask(port)
        seen.add(answer.split(" pid ")[0])
        if len(seen) == 2:
            break
    assert seen == {f"gen {generation} worker 0", f"gen {generation} worker 1"}, seen
    return seen


def test_each_worker_gets_its_index_its_own_listen_pid_and_every_signal_once() -> None:
    with launcher("--listen", "127.0.0.1:0", "--workers", "2") as child:
        port = port_of(child)
        child.wait_for(") ready")  # the generation: both workers sent READY=1
        for index in (0, 1):
            assert f"gen 1 worker {index} pid" in child.output
        assert child.output.count("listening True own LISTEN_PID True") == 2
        answered_by_both(port)
        child.send(signal.SIGUSR1)
        wait_for_all(child, "gen 1 worker 0 got SIGUSR1", "gen 1 worker 1 got SIGUSR1")
        child.send(signal.SIGTERM)
        assert child.finish() == 0
    for index in (0, 1):
        assert child.output.count(f"gen 1 worker {index} got SIGTERM") == 1
        assert child.output.count(f"gen 1 worker {index} got SIGUSR1") == 1
    pids = worker_pids(child.output)
    for index, pid in pids.items():
        assert f"generation 1 worker {index} (pid {pid}) exited: exit code 0" in (
            child.output
        )


def test_the_exit_code_is_the_worst_workers_and_the_grace_period_covers_all() -> None:
    options = ("--listen", "127.0.0.1:0", "--workers", "2", "--grace-period", "0.5")
    with launcher(*options, behaviour="serve/ignore") as child:
        port_of(child)
        child.wait_for(") ready")
        child.send(signal.SIGTERM)
        assert child.finish() == 128 + signal.SIGKILL
    pids = worker_pids(child.output)
    assert f"generation 1 worker 0 (pid {pids[0]}) exited: exit code 0" in child.output
    assert (
        f"generation 1 worker 1 (pid {pids[1]}) exited: SIGKILL (exit code 137)"
        in child.output
    )
    assert "exit code 137; worker 0 (pid" in child.output


def test_a_reload_replaces_every_worker_once_all_new_ones_are_ready(
    tmp_path: Path,
) -> None:
    control = str(tmp_path / "control")
    options = ("--listen", "127.0.0.1:0", "--workers", "2", "--control", control)
    with launcher(*options, behaviour="serve,slowready") as child:
        port = port_of(child)
        child.wait_for(") ready")
        result = reload_command("--control", control)
        assert result.returncode == 0, result.stderr
        new = worker_pids(child.output, 2)
        for index, pid in new.items():
            assert f"worker {index} (pid {pid}): ready" in result.stderr
        wait_for_all(child, "gen 1 worker 0 exiting", "gen 1 worker 1 exiting")
        assert "gen 1 got SIGTERM" not in child.output
        answered_by_both(port, generation=2)
        child.send(signal.SIGTERM)
        assert child.finish() == 0


def test_a_reload_whose_workers_are_not_all_ready_rolls_back(tmp_path: Path) -> None:
    control = str(tmp_path / "control")
    options = ("--listen", "127.0.0.1:0", "--workers", "2", "--control", control)
    with launcher(*options, behaviour="serve,serve/crash") as child:
        port = port_of(child)
        child.wait_for(") ready")
        result = reload_command("--control", control)
        assert result.returncode == 1, result.stderr
        assert re.search(
            r"generation 2 worker 1 \(pid \d+\) exited before it was ready: "
            r"exit code 3",
            result.stderr,
        ), result.stderr
        assert "worker 1 (pid" in result.stderr
        # Worker 0 of generation 2 is stopped too: the launcher sees it exit
        # (its SIGTERM may come before its handler is installed: then it says
        # nothing of its own).
        gone = re.compile(r"generation 2 worker 0 \(pid \d+\) exited: ")
        while not gone.search(child.output):
            child.wait_for("")
        answered_by_both(port, generation=1)
        child.send(signal.SIGTERM)
        assert child.finish() == 0
    assert "gen 1 worker 0 got SIGTERM" in child.output


def test_a_worker_killed_is_replaced_and_the_replacement_serves() -> None:
    with launcher("--listen", "127.0.0.1:0", "--workers", "2") as child:
        port = port_of(child)
        child.wait_for(") ready")
        pids = worker_pids(child.output)
        os.kill(pids[1], signal.SIGKILL)
        line = child.wait_for(f"started (replaces pid {pids[1]})")
        assert "generation 1 worker 1 (pid" in line
        child.wait_for("generation 1 worker 1 (pid")  # its READY=1
        answered_by_both(port)
        child.send(signal.SIGTERM)
        assert child.finish() == 0  # the killed worker was replaced: not counted
    assert f"worker 1 (pid {pids[1]}) exited on its own: SIGKILL" in child.output


def test_a_crash_loop_stops_everything_with_a_clear_error() -> None:
    with launcher(
        "--listen", "127.0.0.1:0", "--workers", "2", behaviour="serve/crash"
    ) as child:
        port_of(child)
        assert child.finish() == 3
    assert child.output.count("gen 1 worker 1 crashing") == 5
    assert "worker 1 died 5 times within 10 s: a crash loop, stopping" in child.output
    assert "gen 1 worker 0 got SIGTERM" in child.output
    # Each replacement waited twice as long as the one before it.
    delays = [float(x) for x in re.findall(r"replaced in ([0-9.]+) s", child.output)]
    assert delays == [0.1, 0.2, 0.4, 0.8], delays


def test_workers_takes_a_count_or_auto(capsys: pytest.CaptureFixture[str]) -> None:
    cpus = len(os.sched_getaffinity(0))
    assert command_parser().parse_args(["run", "--workers", "auto"]).workers == cpus
    assert command_parser().parse_args(["run", "--workers", "0"]).workers == cpus
    assert command_parser().parse_args(["run", "--workers", "3"]).workers == 3
    assert command_parser().parse_args(["run"]).workers is None
    for bad in ("-1", "two", "1.5", "1025", "+2", " 2"):
        with pytest.raises(SystemExit) as exited:
            main(["run", "--workers", bad, "--", "true"])
        assert exited.value.code == 2
        assert "is not a number of workers: 1 to 1024, or auto" in (
            capsys.readouterr().err
        )


# -- under load, with a real server ------------------------------------------------

CLIENTS = 16
STALL = 10.0


async def wait_answers(stats: LoadStats, count: int) -> None:
    with anyio.move_on_after(STALL):
        while stats.answered < count:  # noqa: ASYNC110 -- polling our own counter
            await anyio.sleep(0.01)
        return
    msg = f"the clients stalled short of {count} answers: {stats.summary()}"
    raise AssertionError(msg)


FRESH = 100


def one_request(port: int) -> bytes:
    """One request on a connection of its own."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"GET /work?ms=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        return conn.makefile("rb").read()


def test_killing_one_worker_under_load_loses_only_its_requests() -> None:
    command = [
        *("-m", "shutdown_scope", "run", "--listen", "127.0.0.1:0", "--workers", "2"),
        *("--", sys.executable, "-m", "shutdown_scope", "serve", "work_app:app"),
        *("--app-dir", str(EXAMPLES)),
    ]
    stats = LoadStats()
    going = [True]
    with Launcher(*command) as child:
        port = port_of(child)
        child.wait_for(") ready")
        pids = worker_pids(child.output)
        marks: dict[str, int] = {}

        async def drive() -> None:
            async with anyio.create_task_group() as tg:
                load = functools.partial(
                    run_load,
                    f"http://127.0.0.1:{port}/work?ms=5",
                    clients=CLIENTS,
                    stats=stats,
                    while_=lambda: bool(going),
                )
                tg.start_soon(load)
                await wait_answers(stats, 200)
                os.kill(pids[0], signal.SIGKILL)
                marks["killed"] = stats.answered
                line = f"started (replaces pid {pids[0]})"
                await anyio.to_thread.run_sync(child.wait_for, line)
                marks["replaced"] = stats.answered
                await wait_answers(stats, stats.answered + 300)
                going.clear()

        anyio.run(drive)
        child.wait_for(") ready")  # the replacement's READY=1
        # Keep-alive clients stay where they are: new connections reach it.
        for _ in range(FRESH):
            assert one_request(port).startswith(b"HTTP/1.1 200 ")
        child.send(signal.SIGTERM)
        assert child.finish() == 0, child.output
    # The other worker answered while the killed one was down.
    assert marks["replaced"] > marks["killed"], marks
    assert stats.refused == 0, stats.summary()
    assert set(stats.statuses) == {200}, stats.statuses
    # Lost: only requests on the killed worker's connections (each client has one).
    assert stats.lost <= CLIENTS, stats.summary()
    counts = re.findall(r"/work requests: (\d+) read, (\d+) answered", child.output)
    assert len(counts) == 2, child.output  # the killed worker printed nothing
    assert all(int(read) == int(answered) > 0 for read, answered in counts), counts
