"""The processes the launcher started: generations, their workers, and reaping.

``Children`` owns which generation serves, which one is starting to take over,
which ones are retiring, and the process groups whose leader is gone. It starts
workers (each with its notify socket and the handed listening sockets), reaps
them, and sends SIGKILL to those still running after their grace period. What an
exit means (a failed reload, a crash loop, the end) is the supervisor's call.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence

from shutdown_scope._sd_protocol import MANAGER_VARIABLES, watchdog_interval

from ._events import event
from ._generation import Generation, Worker, describe_exit, exit_code_of
from ._notify import NotifyInbox
from ._options import Options
from ._runtime_dir import RuntimeDir
from ._signal_inbox import HANDLED
from ._sockets import Listener
from ._spawn import spawn

__all__ = ["Children", "child_environ"]

logger = logging.getLogger("shutdown_scope.launcher")

# Without a finite --grace-period, a successor that failed its reload gets this
# long to exit after SIGTERM before SIGKILL.
_FAILED_SUCCESSOR_GRACE = 10.0
# How often to look whether a process group whose leader exited is empty.
_GROUP_POLL = 0.1
# Orphans named in the log; a child that makes thousands (a shell loop running
# `cmd &`) gets them counted, not one line each.
_ORPHANS_LOGGED = 3


class Children:
    """Every process the launcher started and has not forgotten.

    ``on_started`` hears of each worker as soon as it runs (the supervisor
    watches its notify socket); the first generation starts before there is
    a supervisor, which then watches its workers itself.
    """

    def __init__(
        self,
        options: Options,
        listeners: Sequence[Listener],
        *,
        environ: dict[str, str],
    ) -> None:
        self._options = options
        self.listeners = list(listeners)
        self._environ = environ  # what every worker starts with
        self.on_started: Callable[[Worker], None] | None = None
        self._runtime = RuntimeDir()  # the workers' notify sockets
        self.generations_started = 0
        self._spawned = 0  # names each notify socket apart
        self._orphans = 0  # reaped so far
        self.current: Generation | None = None
        self.successor: Generation | None = None
        self.retiring: list[Generation] = []
        # Leaders gone, process groups maybe not: waited for, killed at the deadline.
        self._lingering: list[Worker] = []

    # -- who is there ------------------------------------------------------------

    def workers(self) -> Iterator[Worker]:
        """Every worker the launcher started and has not forgotten."""
        for gen in (self.current, self.successor, *self.retiring):
            if gen is not None:
                yield from gen.workers
        yield from self._lingering

    def live(self) -> list[Worker]:
        """The workers whose leader or process group still runs, once each."""
        live: list[Worker] = []
        for worker in self.workers():
            if worker.alive and all(worker is not x for x in live):
                live.append(worker)
        return live

    def generation_of(self, worker: Worker) -> Generation | None:
        """The current, successor or retiring generation ``worker`` belongs to."""
        for gen in (self.current, self.successor, *self.retiring):
            if gen is not None and any(w is worker for w in gen.workers):
                return gen
        return None

    def deadlines(self) -> list[float]:
        """When a worker is due for SIGKILL, or a lingering group for a look."""
        deadlines = [w.kill_at for w in self.live()]
        if any(w.alive for w in self._lingering):
            # Members of a group do not all report to us (no subreaper): poll.
            deadlines.append(time.monotonic() + _GROUP_POLL)
        return deadlines

    # -- starting ------------------------------------------------------------------

    def start_generation(self) -> Generation:
        """Start the next generation's workers; those started retire on failure.

        Raises:
            SpawnError, OSError: a worker could not be started.
        """
        self.generations_started += 1
        size = self._options.workers or 1
        gen = Generation(self.generations_started, time.monotonic(), size=size)
        indexes = [None] if self._options.workers is None else range(size)
        try:
            for index in indexes:
                gen.workers.append(self.start_worker(gen.number, index))
                if index is not None:
                    logger.info(
                        "%s started",
                        gen.workers[-1],
                        extra=event("generation_spawned", gen.workers[-1]),
                    )
        except BaseException:
            for worker in gen.workers:  # those that did start
                self._retire_worker(worker, self.grace_or_fallback())
            self.retiring.append(gen)
            raise
        return gen

    def replace(self, gen: Generation, index: int, worker: Worker) -> None:
        """``worker`` takes the place of ``gen``'s worker ``index``, which died."""
        old, gen.workers[index] = gen.workers[index], worker
        logger.info(
            "%s started (replaces pid %d)",
            worker,
            old.pid,
            extra=event("generation_spawned", worker, replaces=old.pid),
        )

    def start_worker(self, number: int, index: int | None) -> Worker:
        """Start one worker of generation ``number`` (``index`` None: the one).

        Raises:
            SpawnError, OSError: it could not be started.
        """
        self._spawned += 1
        sock, path = self._runtime.bind_datagram(f"notify-{self._spawned}")
        try:
            inbox = NotifyInbox.adopt(sock, path, self._options.notify_access)
        except BaseException:
            self._runtime.remove(path)
            raise
        env = dict(self._environ)
        env["NOTIFY_SOCKET"] = path
        env["SHUTDOWN_SCOPE_GENERATION"] = str(number)
        if index is not None:
            env["SHUTDOWN_SCOPE_WORKER"] = str(index)
        if self.listeners:
            env["LISTEN_FDS"] = str(len(self.listeners))
            env["LISTEN_FDNAMES"] = ":".join(_fdname(x) for x in self.listeners)
        try:
            pid = spawn(
                self._options.command,
                env,
                [x.sock.fileno() for x in self.listeners],
                reset_signals=HANDLED,
            )
        except BaseException:
            inbox.close()
            self._runtime.remove(path)
            raise
        worker = Worker(number, index, pid, inbox, started_at=time.monotonic())
        if self.on_started is not None:
            self.on_started(worker)
        return worker

    def ask_for_dump(self) -> tuple[bool, str]:
        """SIGUSR1 to each live process of the serving generation (not to its
        group: only a scope that asked for it dumps); what was done."""
        if self.current is None:
            return False, "dump: no generation serves"
        sent = []
        for worker in self.current.workers:
            if worker.exit_code is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGUSR1)
                    sent.append(str(worker.pid))
        if not sent:
            return False, f"dump: {self.current} has no live process"
        logger.info("dump: SIGUSR1 sent to %s", self.current)
        return True, f"dump: SIGUSR1 sent to pid {', '.join(sent)} ({self.current})"

    def close_listeners(self) -> None:
        """No generation starts from now on: let go of the launcher's copies.

        They would only keep the sockets open, so that connections the kernel
        still queued once the children close theirs would hang, then be reset.
        """
        for listener in self.listeners:
            listener.sock.close()

    # -- stopping ------------------------------------------------------------------

    def stop_signal(self) -> int:
        """What a worker is sent to stop: SIGTERM, or what --rewrite makes of it."""
        return (
            self._options.rewrite.get(signal.SIGTERM, signal.SIGTERM) or signal.SIGTERM
        )

    def grace_or_fallback(self) -> float:
        """--grace-period, or a fallback where an endless one must not apply."""
        grace = self._options.grace_period
        return _FAILED_SUCCESSOR_GRACE if math.isinf(grace) else grace

    def retire(self, gen: Generation, sig: int) -> None:
        """Send ``sig`` to each worker of ``gen``, and SIGKILL after the grace."""
        grace = self._options.grace_period
        if gen is not self.current and not gen.told_ready:
            grace = self.grace_or_fallback()
        for worker in gen.workers:
            self._retire_worker(worker, grace, sig)
        if any(w.exit_code is None for w in gen.workers):
            self.retiring.append(gen)

    def _retire_worker(
        self, worker: Worker, grace: float, sig: int | None = None
    ) -> None:
        worker.asked_to_stop = True
        worker.kill_at = time.monotonic() + grace
        worker.signal_group(self.stop_signal() if sig is None else sig)

    def ask_unasked_to_stop(self, targets: Sequence[Worker]) -> None:
        """Send the stop signal to those of ``targets`` not asked before."""
        for other in targets:
            other.asked_to_stop = True
            other.signal_group(self.stop_signal())

    def kill_overdue(self, now: float) -> None:
        """SIGKILL each worker still running after its grace period."""
        for worker in self.live():
            if now >= worker.kill_at:
                logger.warning(
                    "%s still running after its grace period: SIGKILL", worker
                )
                worker.kill_at = math.inf
                worker.signal_group(signal.SIGKILL)

    # -- exits ---------------------------------------------------------------------

    def reap(self) -> Iterator[Worker]:
        """Each worker that exited, its ``exit_code`` set; orphans are counted.

        Lazy: each is handled before the next is waited for.
        """
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = next(
                (w for w in self.workers() if w.pid == pid and w.exit_code is None),
                None,
            )
            if worker is None:
                self._orphans += 1
                if self._orphans <= _ORPHANS_LOGGED:
                    logger.info(
                        "reaped orphan pid %d (%s)%s",
                        pid,
                        describe_exit(exit_code_of(status)),
                        "; more are counted, not logged"
                        if self._orphans == _ORPHANS_LOGGED
                        else "",
                        extra={
                            "event": "orphan_reaped",
                            "pid": pid,
                            "exit_code": exit_code_of(status),
                        },
                    )
                continue
            worker.exit_code = exit_code_of(status)
            yield worker

    def release(self, worker: Worker) -> None:
        """``worker`` exited: close its notify socket; its group lingers, if any."""
        worker.close()
        self._runtime.remove(worker.inbox.path)
        if worker.alive:  # its process group lives on
            self._linger(worker)

    def _linger(self, worker: Worker) -> None:
        """The leader is gone, its group is not: stop it, kill it in time."""
        self._lingering.append(worker)
        if not worker.asked_to_stop:
            worker.asked_to_stop = True
            worker.signal_group(self.stop_signal())
        if math.isinf(worker.kill_at):
            worker.kill_at = time.monotonic() + self.grace_or_fallback()

    def forget_if_done(self, gen: Generation) -> None:
        """A retiring generation whose workers all exited is no longer one."""
        if gen in self.retiring and not any(w.exit_code is None for w in gen.workers):
            self.retiring.remove(gen)

    def close(self) -> None:
        """Close every worker's notify socket and the runtime directory."""
        for worker in self.workers():
            worker.close()
        self._runtime.close()  # with the workers' sockets
        if self._orphans > _ORPHANS_LOGGED:
            logger.info("%d orphans reaped in all", self._orphans)


def child_environ(environ: dict[str, str], *, relayed: bool) -> dict[str, str]:
    """What each worker starts with: ``environ`` without systemd's variables.

    ``relayed``: the launcher relays notifications to a manager above it, so
    if that one watches the launcher, each generation pings it through us.
    """
    env = {k: v for k, v in environ.items() if k not in MANAGER_VARIABLES}
    if relayed and _watched(environ):
        env["WATCHDOG_USEC"] = environ["WATCHDOG_USEC"]
    return env


def _watched(environ: dict[str, str]) -> bool:
    try:
        return watchdog_interval(environ) is not None
    except ValueError as error:
        logger.warning("no watchdog pings: %s", error)
        return False


def _fdname(listener: Listener) -> str:
    # LISTEN_FDNAMES: colon-separated, so a name must not hold one (systemd's rule).
    return listener.name.replace(":", "_")[:255]
