"""rehearse(): run a server, load it, signal it, and account for every request."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from signal import SIGHUP, SIGTERM, Signals
from types import MappingProxyType
from typing import Final

import anyio
import anyio.to_thread

from shutdown_scope import ShutdownReport
from shutdown_scope._report_file import REPORT_FILE_VARIABLE
from shutdown_scope._sd_notify import MANAGER_VARIABLES

from . import _processes
from ._report_data import read_report
from ._result import Rehearsal, RehearsalError

__all__ = ["Rehearsal", "RehearsalError", "rehearse"]

_POLL: Final = 0.01
_RETRY: Final = 0.05
# Once the server has exited its clients see their connections end at once; this
# only bounds a client whose socket something else (an orphaned grandchild) holds.
_LOAD_AFTER_EXIT: Final = 5.0
_OUTPUT_TAIL: Final = 3000
# systemd's or the launcher's, from the process running the tests: the server
# under rehearsal must not notify them or take their sockets.
_NOT_INHERITED: Final = (
    *MANAGER_VARIABLES,
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
)


def rehearse(
    command: Sequence[str],
    *,
    url: str,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    clients: int = 8,
    signal_after: float = 0.5,
    signal: int = SIGTERM,
    reload: bool = False,
    start_timeout: float = 30.0,
    grace_period: float = 30.0,
) -> Rehearsal:
    """Rehearse a shutdown: start ``command``, load it, signal it, count.

    Starts the server (its own session, stdout and stderr captured, with
    ``SHUTDOWN_SCOPE_REPORT_FILE`` set), waits until a GET of ``url`` is
    answered, runs ``clients`` keep-alive HTTP/1.1 clients against ``url`` and,
    after ``signal_after`` seconds of answers, sends ``signal``. The clients
    keep going until the server has exited. ``{port}`` in ``url``, in the
    command's arguments and in ``env``'s values stands for a free TCP port
    picked here (best effort: another process could take it first).

    With ``reload=True`` the command is ``shutdown-scope run ... -- server``
    (Linux): the launcher is sent SIGHUP first, the load goes on while the
    next generation takes over, and once the replaced generation has exited
    and the new one has answered for ``signal_after`` seconds, ``signal`` stops
    the launcher.

    Runs its own event loop: call it from synchronous code (from an async test,
    through ``anyio.to_thread.run_sync``). Needs h11 (the ``testing`` extra).

    Args:
        command: the server's argv; it must not fork into the background.
        url: an ``http://host:port/path`` to load, e.g.
            ``"http://127.0.0.1:{port}/work?ms=20"``.
        env: variables added to this process's environment for the server.
        cwd: the server's working directory.
        clients: concurrent keep-alive connections.
        signal_after: seconds of load before the signal (and after a reload).
        signal: the signal that stops the server.
        reload: reload under the launcher with SIGHUP before the stop.
        start_timeout: seconds for the server to answer its first request
            (and, after a reload, for the old generation to be replaced).
        grace_period: seconds from the signal to SIGKILL.

    Returns:
        What happened; ``rehearsal.lost == 0 and rehearsal.report.clean`` is a
        shutdown that lost nothing.

    Raises:
        ValueError, TypeError: an invalid argument.
        RehearsalError: the server did not answer, or exited before the signal,
            or the reload did not replace it. The message has its output.
        ImportError: h11 is missing.
    """
    from .http_load import split_url  # h11: only when a rehearsal runs

    argv, environ, url = _substitute(command, env, url)
    split_url(url)
    _check_options(clients, signal_after, signal, start_timeout, grace_period, reload)
    workdir = Path(tempfile.mkdtemp(prefix="shutdown-rehearsal-"))
    try:
        report_file = workdir / "report.json"
        environ[REPORT_FILE_VARIABLE] = str(report_file)
        output = workdir / "output"
        # O_APPEND: the server's stdout and stderr share one file position.
        with output.open("ab") as server_output:
            proc = subprocess.Popen(  # noqa: S603 -- the caller's own server command
                argv,
                env=environ,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=server_output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # as under a supervisor: no terminal signals
            )
        drive = _Drive(
            proc,
            url=url,
            output=output,
            report_file=report_file,
            clients=clients,
            signal_after=signal_after,
            start_timeout=start_timeout,
            grace_period=grace_period,
        )
        try:
            return anyio.run(drive.run, Signals(signal), reload)
        finally:
            if proc.poll() is None:
                _processes.kill_tree(proc.pid)
            proc.wait()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _substitute(
    command: Sequence[str], env: Mapping[str, str] | None, url: str
) -> tuple[list[str], dict[str, str], str]:
    if isinstance(command, str) or not isinstance(command, Sequence) or not command:
        msg = f"command must be a non-empty argv list, not {command!r}"
        raise TypeError(msg)
    extra = dict(env or {})
    for value in (*command, *extra.keys(), *extra.values(), url):
        if not isinstance(value, str):
            msg = f"command, env and url hold strings only, not {value!r}"
            raise TypeError(msg)
    in_server = any("{port}" in part for part in (*command, *extra.values()))
    if ("{port}" in url) != in_server:
        msg = (
            "{port} must appear both in url and in the command or env (the"
            f" server must be told the port it is loaded on); url={url!r}"
        )
        raise ValueError(msg)
    port = str(_processes.free_port()) if in_server else ""
    environ = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
    environ.update({k: v.replace("{port}", port) for k, v in extra.items()})
    argv = [part.replace("{port}", port) for part in command]
    return argv, environ, url.replace("{port}", port)


def _check_options(  # noqa: PLR0917 -- rehearse()'s keyword-only options
    clients: int,
    signal_after: float,
    signal: int,
    start_timeout: float,
    grace_period: float,
    reload: bool,  # noqa: FBT001 -- checked here, keyword-only for the caller
) -> None:
    if isinstance(clients, bool) or not isinstance(clients, int) or clients < 1:
        msg = f"clients must be an int >= 1, not {clients!r}"
        raise ValueError(msg)
    for name, value in (
        ("signal_after", signal_after),
        ("start_timeout", start_timeout),
        ("grace_period", grace_period),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            msg = f"{name} must be a number of seconds, not {value!r}"
            raise TypeError(msg)
        if math.isnan(value) or value < 0 or math.isinf(value):
            msg = f"{name} must be finite seconds >= 0, not {value!r}"
            raise ValueError(msg)
    try:
        valid = not isinstance(signal, bool) and bool(Signals(signal))
    except ValueError:
        valid = False
    if not valid:
        msg = f"signal must be a signal number (signal.SIGTERM), not {signal!r}"
        raise ValueError(msg)
    if not isinstance(reload, bool):
        msg = f"reload must be True or False, not {reload!r}"
        raise TypeError(msg)


class _Drive:
    """The event-loop side of one rehearsal."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        *,
        url: str,
        output: Path,
        report_file: Path,
        clients: int,
        signal_after: float,
        start_timeout: float,
        grace_period: float,
    ) -> None:
        from .http_load import LoadStats

        self.proc = proc
        self.url = url
        self.output = output
        self.report_file = report_file
        self.clients = clients
        self.signal_after = signal_after
        self.start_timeout = start_timeout
        self.grace_period = grace_period
        self.stats = LoadStats()
        self.reports: list[ShutdownReport] = []
        self.refused_before_stop = 0
        self.exited_at = math.nan

    def running(self) -> bool:
        return self.proc.poll() is None

    def fail(self, why: str) -> RehearsalError:
        text = _processes.read_text(self.output)
        tail = text[-_OUTPUT_TAIL:]
        cut = "...\n" if len(text) > len(tail) else ""
        return RehearsalError(f"{why}; the server's output:\n{cut}{tail}")

    async def run(self, signal: Signals, reload: bool) -> Rehearsal:  # noqa: FBT001
        from .http_load import run_load

        await self._wait_answering()
        failure: RehearsalError | None = None
        killed, exited_after = False, math.nan
        async with anyio.create_task_group() as tg:

            async def load() -> None:
                await run_load(
                    self.url,
                    clients=self.clients,
                    stats=self.stats,
                    while_=self.running,
                )

            tg.start_soon(load)
            try:
                killed, exited_after = await self._signal(signal, reload)
            except RehearsalError as error:  # raised below, not in an ExceptionGroup
                failure = error
                tg.cancel_scope.cancel()
            else:
                tg.cancel_scope.deadline = anyio.current_time() + _LOAD_AFTER_EXIT
        if failure is not None:
            raise failure
        self._take_report()
        stats = self.stats
        code = self.proc.returncode
        assert code is not None  # _wait_exit waited for it
        return Rehearsal(
            answered=stats.answered,
            lost=stats.lost,
            refused=stats.refused,
            refused_before_stop=self.refused_before_stop,
            reset=stats.resets,
            closed_idle=stats.closed_idle,
            closed_by_server=stats.closed_by_server,
            statuses=MappingProxyType(dict(stats.statuses)),
            exit_code=code,
            exited_after=exited_after,
            killed=killed,
            reports=tuple(self.reports),
            output=_processes.read_text(self.output),
        )

    async def _signal(
        self,
        signal: Signals,
        reload: bool,  # noqa: FBT001
    ) -> tuple[bool, float]:
        """Under load: reload if asked, signal, wait for the exit.

        Returns whether it had to be killed, and the seconds until it exited.
        """
        await self._load_for(self.signal_after)
        if reload:
            await self._reload()
            await self._load_for(self.signal_after)
        self.refused_before_stop = self.stats.refused
        signalled = time.monotonic()
        self.proc.send_signal(signal)
        killed = not await self._wait_exit(self.grace_period)
        if killed:
            _processes.kill_tree(self.proc.pid)
            await self._wait_exit(math.inf)
        return killed, self.exited_at - signalled

    async def _wait_answering(self) -> None:
        from .http_load import get_status

        with anyio.move_on_after(self.start_timeout):
            while True:
                code = self.proc.poll()
                if code is not None:
                    why = (
                        f"the server exited with code {code}"
                        f" before it answered {self.url}"
                    )
                    raise self.fail(why)
                with contextlib.suppress(OSError):
                    status = await get_status(self.url)
                    # Counted with the load's: the server counts it too.
                    self.stats.answered += 1
                    statuses = self.stats.statuses
                    statuses[status] = statuses.get(status, 0) + 1
                    return
                await anyio.sleep(_RETRY)
        why = f"the server did not answer {self.url} within {self.start_timeout:g} s"
        raise self.fail(why)

    async def _load_for(self, seconds: float) -> None:
        """Let the load run ``seconds``, and until an answer came in that time."""
        answered = self.stats.answered
        with anyio.move_on_after(seconds):
            while self.running():  # noqa: ASYNC110 -- Popen has nothing to await
                await anyio.sleep(_POLL)
        with anyio.move_on_after(self.start_timeout):
            while self.stats.answered == answered and self.running():  # noqa: ASYNC110 -- polls the clients' counters
                await anyio.sleep(_POLL)
        if not self.running():
            why = (
                f"the server exited with code {self.proc.returncode} before the signal"
            )
            raise self.fail(why)
        if self.stats.answered == answered:
            why = f"no answer from {self.url} in {self.start_timeout:g} s"
            raise self.fail(why)

    async def _wait_exit(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for the exit; True if it exited."""

        def wait() -> None:
            self.proc.wait()
            self.exited_at = time.monotonic()

        with anyio.move_on_after(seconds):
            await anyio.to_thread.run_sync(wait, abandon_on_cancel=True)
            return True
        return False

    async def _reload(self) -> None:
        """SIGHUP the launcher; wait until its generations then have exited."""
        old = _processes.children(self.proc.pid)
        if not old:
            why = (
                "reload=True needs `shutdown-scope run ... -- SERVER` as the"
                " command: it has no child process to replace"
            )
            raise self.fail(why)
        self.proc.send_signal(SIGHUP)
        with anyio.move_on_after(self.start_timeout + self.grace_period):
            while any(map(_processes.alive, old)):
                if not self.running():
                    code = self.proc.returncode
                    why = f"the launcher exited with code {code} in the reload"
                    raise self.fail(why)
                await anyio.sleep(_POLL)
            self._take_report()
            return
        pids = ", ".join(str(pid) for pid in sorted(old) if _processes.alive(pid))
        why = f"the reload did not replace pid {pids}"
        raise self.fail(why)

    def _take_report(self) -> None:
        """Read (and remove) the report the last process to stop wrote."""
        with contextlib.suppress(FileNotFoundError):
            self.reports.append(read_report(self.report_file))
            self.report_file.unlink()
