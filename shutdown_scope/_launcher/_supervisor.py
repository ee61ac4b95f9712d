"""The launcher's loop: signals, reaping, readiness, reloads, workers.

Single-threaded and synchronous on purpose: as PID 1 it must keep working
whatever the child does. Signals arrive through the ``SignalInbox``'s pipe (the
handlers themselves do nothing), so one ``select`` waits for signals, notify
datagrams and control connections at once.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import selectors
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from shutdown_scope._sd_protocol import MANAGER_VARIABLES, watchdog_interval

from ._control import ControlServer, Reply
from ._generation import Generation, Worker, describe_exit, exit_code_of
from ._metrics_file import MetricsFile, ReloadOutcome
from ._notify import NotifyAccess, NotifyInbox
from ._readiness import PROBE_INTERVAL, ReadyMode, is_accepting, socket_inodes
from ._reloads import Reloads
from ._runtime_dir import RuntimeDir
from ._signal_inbox import FORWARDED, HANDLED, SignalInbox
from ._sockets import Listener
from ._spawn import SpawnError, spawn
from ._workers import CRASH_LIMIT, CRASH_WINDOW, Respawns

__all__ = ["FORWARDED", "STOPPING", "Options", "Supervisor"]

logger = logging.getLogger("shutdown_scope.launcher")

# Incoming signals that mean "stop": no reload after one, and the grace period runs.
STOPPING = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGQUIT})
# Without a finite --grace-period, a successor that failed its reload gets this
# long to exit after SIGTERM before SIGKILL.
_FAILED_SUCCESSOR_GRACE = 10.0
# How often to look whether a process group whose leader exited is empty.
_GROUP_POLL = 0.1
# The longest single wait: epoll takes at most INT_MAX ms (24.8 days), so a
# farther deadline (--grace-period 3000000) is waited for in steps.
_LONGEST_WAIT = 86400.0
# Orphans named in the log; a child that makes thousands (a shell loop running
# `cmd &`) gets them counted, not one line each.
_ORPHANS_LOGGED = 3


@dataclass(frozen=True)
class Options:
    """What ``shutdown-scope run`` was asked to do.

    ``workers`` None: one child per generation whose exit ends the launcher;
    a number: that many workers, each replaced if it dies on its own.
    """

    command: Sequence[str]
    rewrite: dict[int, int] = field(default_factory=dict)
    grace_period: float = math.inf
    ready_timeout: float = 30.0
    debounce: float = 0.2
    notify_access: NotifyAccess = "main"
    ready: ReadyMode = field(default_factory=ReadyMode)
    workers: int | None = None


def _no_upstream(state: str) -> None:
    """No supervisor above the launcher: its notifications go nowhere."""


class Supervisor:
    """Runs generations of one command until it stops; ``run()`` is the exit code."""

    def __init__(
        self,
        options: Options,
        listeners: Sequence[Listener],
        *,
        signals: SignalInbox,
        environ: dict[str, str],
        control: ControlServer | None = None,
        notify_upstream: Callable[[str], None] | None = None,
        metrics: MetricsFile | None = None,
    ) -> None:
        self.options = options
        self._metrics = metrics
        self.listeners = list(listeners)
        self._base_env = {
            k: v for k, v in environ.items() if k not in MANAGER_VARIABLES
        }
        if notify_upstream is not None and _watched(environ):
            # systemd watches the launcher: each generation pings it through us.
            self._base_env["WATCHDOG_USEC"] = environ["WATCHDOG_USEC"]
        self._control = control
        self._upstream = notify_upstream or _no_upstream
        self._selector = selectors.DefaultSelector()
        self._runtime = RuntimeDir()  # the workers' notify sockets
        self._count = 0
        self._spawned = 0  # names each notify socket apart
        self._orphans = 0  # reaped so far
        self.current: Generation | None = None
        self.successor: Generation | None = None
        self.retiring: list[Generation] = []
        # Leaders gone, process groups maybe not: waited for, killed at the deadline.
        self._lingering: list[Worker] = []
        self._reloads = Reloads()
        self._respawns = Respawns()
        self.stopping = False
        self._exit_code: int | None = None
        self._last_signal: dict[int, float] = {}
        self._signals = signals  # caught since the launcher's start; main() owns it
        # What --ready accepting looks for in the workers' epoll sets.
        self._inodes = socket_inodes([x.sock.fileno() for x in self.listeners])

    # -- the loop ------------------------------------------------------------

    def run(self) -> int:
        """Start the first generation and supervise until every child has exited."""
        self._selector.register(self._signals, selectors.EVENT_READ, self._on_wakeup)
        try:
            try:
                self.current = self._start_generation()
            except SpawnError as error:
                logger.error("%s", error.strerror)  # noqa: TRY400 -- a clear line, no traceback
                return 126 if error.errno in {errno.EACCES, errno.ENOEXEC} else 127
            except OSError as error:
                logger.error("cannot start the command: %s", error)  # noqa: TRY400
                return 1
            logger.info("%s started", self.current)
            while not self._finished():
                self._wait_once()
            assert self._exit_code is not None
            if self.options.workers is not None and self.current is not None:
                logger.info(
                    "exit code %d; %s", self._exit_code, self.current.outcomes()
                )
            return self._exit_code
        finally:
            self._close()

    def _finished(self) -> bool:
        return self._exit_code is not None and not self._live()

    def _workers(self) -> Iterator[Worker]:
        """Every worker the launcher started and has not forgotten."""
        for gen in (self.current, self.successor, *self.retiring):
            if gen is not None:
                yield from gen.workers
        yield from self._lingering

    def _live(self) -> list[Worker]:
        live: list[Worker] = []
        for worker in self._workers():
            if worker.alive and all(worker is not x for x in live):
                live.append(worker)
        return live

    def _wait_once(self) -> None:
        timeout = self._next_deadline() - time.monotonic()
        events = self._selector.select(
            None if math.isinf(timeout) else min(max(0.0, timeout), _LONGEST_WAIT)
        )
        # Exits first: a successor whose READY=1 and exit arrive together must
        # not take over (and stop the serving generation) as if it still ran.
        self._reap()
        for key, _ in events:
            callback: Callable[[], None] = key.data
            callback()
        self._reap()
        self._check_deadlines()

    def _next_deadline(self) -> float:
        deadlines = [w.kill_at for w in self._live()]
        if any(w.alive for w in self._lingering):
            # Members of a group do not all report to us (no subreaper): poll.
            deadlines.append(time.monotonic() + _GROUP_POLL)
        successor = self.successor
        if successor is not None and not successor.ready and not self.stopping:
            deadlines.append(successor.started_at + self.options.ready_timeout)
        deadlines.extend(self._probe_deadline(w) for w in self._unready())
        if not self.stopping:
            deadlines.append(self._respawns.next_due())
        if self._control is not None:
            deadlines.append(self._control.next_deadline())
        return min(deadlines, default=math.inf)

    # -- signals ---------------------------------------------------------------

    def _on_wakeup(self) -> None:
        for signum in self._signals.take():
            if signum != signal.SIGCHLD:
                self._on_signal(signal.Signals(signum))

    def _on_signal(self, sig: signal.Signals) -> None:
        now = time.monotonic()
        last = self._last_signal.get(sig, -math.inf)
        if now - last < self.options.debounce:
            logger.info(
                "%s again within %.2f s: counted once", sig.name, self.options.debounce
            )
            return
        self._last_signal[sig] = now
        if sig == signal.SIGHUP and sig not in self.options.rewrite:
            self.request_reload(None)
            return
        sent = self.options.rewrite.get(sig, sig)
        if sent == 0:
            logger.info("%s dropped (--rewrite)", sig.name)
            return
        targets = self._live()
        if sig in STOPPING and not self.stopping:
            # A generation already draining after a reload was asked once; the
            # same signal again would make its scope skip to CANCELLING.
            targets = [w for w in targets if not w.asked_to_stop]
            self._begin_stop(f"received {sig.name}")
        for worker in targets:  # once each: every worker is a group of its own
            worker.signal_group(sent)
        names = ", ".join(str(w) for w in targets) or "no child"
        shown = (
            sig.name if sent == sig else f"{sig.name} as {signal.Signals(sent).name}"
        )
        logger.info("%s forwarded to %s", shown, names)

    def _begin_stop(self, why: str) -> None:
        if self.stopping:
            return
        self.stopping = True
        if self.options.workers is not None:
            # The exit code is the worst of the workers that stop from now on.
            self._exit_code = self._exit_code or 0
        self._respawns.clear()
        # No generation starts after this one: the launcher's copies would only
        # keep the sockets open, so that connections the kernel still queued once
        # the children close theirs would hang, then be reset.
        for listener in self.listeners:
            listener.sock.close()
        self._upstream("STOPPING=1")
        now = time.monotonic()
        for worker in self._live():
            worker.asked_to_stop = True
            worker.kill_at = min(worker.kill_at, now + self.options.grace_period)
        if self._reloads.running:
            self._count_reload("interrupted")
        self._reloads.abandon(f"stopping ({why})")
        logger.info("stopping (%s)", why)

    def _stop_signal(self) -> int:
        return (
            self.options.rewrite.get(signal.SIGTERM, signal.SIGTERM) or signal.SIGTERM
        )

    # -- generations and workers ------------------------------------------------

    def _start_generation(self) -> Generation:
        self._count += 1
        size = self.options.workers or 1
        gen = Generation(self._count, time.monotonic(), size=size)
        indexes = [None] if self.options.workers is None else range(size)
        try:
            for index in indexes:
                gen.workers.append(self._start_worker(gen.number, index))
                if index is not None:
                    logger.info("%s started", gen.workers[-1])
        except BaseException:
            for worker in gen.workers:  # those that did start
                self._retire_worker(worker, self._grace_or_fallback())
            self.retiring.append(gen)
            raise
        return gen

    def _start_worker(self, number: int, index: int | None) -> Worker:
        self._spawned += 1
        sock, path = self._runtime.bind_datagram(f"notify-{self._spawned}")
        try:
            inbox = NotifyInbox.adopt(sock, path, self.options.notify_access)
        except BaseException:
            self._runtime.remove(path)
            raise
        env = dict(self._base_env)
        env["NOTIFY_SOCKET"] = path
        env["SHUTDOWN_SCOPE_GENERATION"] = str(number)
        if index is not None:
            env["SHUTDOWN_SCOPE_WORKER"] = str(index)
        if self.listeners:
            env["LISTEN_FDS"] = str(len(self.listeners))
            env["LISTEN_FDNAMES"] = ":".join(_fdname(x) for x in self.listeners)
        try:
            pid = spawn(
                self.options.command,
                env,
                [x.sock.fileno() for x in self.listeners],
                reset_signals=HANDLED,
            )
        except BaseException:
            inbox.close()
            self._runtime.remove(path)
            raise
        worker = Worker(number, index, pid, inbox, started_at=time.monotonic())
        self._selector.register(
            inbox.sock, selectors.EVENT_READ, lambda: self._on_notify(worker)
        )
        return worker

    def _generation_of(self, worker: Worker) -> Generation | None:
        for gen in (self.current, self.successor, *self.retiring):
            if gen is not None and any(w is worker for w in gen.workers):
                return gen
        return None

    def _on_notify(self, worker: Worker) -> None:
        was_ready = worker.ready
        datagrams = worker.read_notifications(
            count_ready=self.options.ready.kind == "notify"
        )
        if worker.ready and not was_ready:
            self._on_ready(worker)
        elif worker.refusal() and not worker.refusal_told:
            # Under systemd, `systemctl status` shows why the service is not ready.
            worker.refusal_told = True
            self._upstream(f"STATUS={worker}: {worker.refusal()}")
        self._relay(worker, datagrams)

    def _relay(self, worker: Worker, datagrams: list[list[str]]) -> None:
        serving = self.current is not None and self._generation_of(worker) is (
            self.current
        )
        for lines in datagrams:  # one by one: each fits a datagram
            relayed = [
                line
                for line in lines
                if (serving and line.startswith(("STATUS=", "WATCHDOG=1")))
                or (self.stopping and line.startswith("EXTEND_TIMEOUT_USEC="))
            ]
            if relayed:
                self._upstream("\n".join(relayed))

    def _on_ready(self, worker: Worker) -> None:
        gen = self._generation_of(worker)
        if self.stopping:
            logger.info("%s ready, but the launcher is stopping", worker)
            return
        if gen is None or not gen.ready:
            return
        if gen is self.current:
            how = self.options.ready
            said = "" if how.kind == "notify" else f" (--ready {how})"
            logger.info("%s ready%s", worker if gen.told_ready else gen, said)
            if not gen.told_ready:
                gen.told_ready = True
                self._upstream("READY=1")
            return
        if gen is not self.successor or self.current is None:
            return
        old = self.current
        self.current, self.successor = gen, None
        gen.told_ready = True
        self._respawns.clear()  # the old generation's dead are not replaced
        self._retire(old, self._stop_signal())
        shown = f"{gen} ready" + self._outcomes(gen)
        sig_name = signal.Signals(self._stop_signal()).name
        self._count_reload("done")  # first: whoever hears the outcome sees it
        self._reloads.finish(ok=True, why=f"{shown}; {old} sent {sig_name}")
        self._upstream("READY=1")
        self._begin_queued()

    def _grace_or_fallback(self) -> float:
        grace = self.options.grace_period
        return _FAILED_SUCCESSOR_GRACE if math.isinf(grace) else grace

    def _retire(self, gen: Generation, sig: int) -> None:
        grace = self.options.grace_period
        if gen is not self.current and not gen.told_ready:
            grace = self._grace_or_fallback()
        for worker in gen.workers:
            self._retire_worker(worker, grace, sig)
        if any(w.exit_code is None for w in gen.workers):
            self.retiring.append(gen)

    def _retire_worker(
        self, worker: Worker, grace: float, sig: int | None = None
    ) -> None:
        worker.asked_to_stop = True
        worker.kill_at = time.monotonic() + grace
        worker.signal_group(self._stop_signal() if sig is None else sig)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = next(
                (w for w in self._workers() if w.pid == pid and w.exit_code is None),
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
                    )
                continue
            worker.exit_code = exit_code_of(status)
            self._on_exit(worker)

    def _on_exit(self, worker: Worker) -> None:
        assert worker.exit_code is not None
        with contextlib.suppress(KeyError):
            self._selector.unregister(worker.inbox.sock)
        # Its last words still count (not READY=1: it no longer runs).
        self._relay(worker, worker.read_notifications())
        worker.close()
        self._runtime.remove(worker.inbox.path)
        if worker.alive:  # its process group lives on
            self._linger(worker)
        how = describe_exit(worker.exit_code)
        gen = self._generation_of(worker)
        if gen is None:
            logger.info("%s exited: %s", worker, how)
        elif gen in self.retiring:
            logger.info("%s exited: %s", worker, how)
            if not any(w.exit_code is None for w in gen.workers):
                self.retiring.remove(gen)
        elif gen is self.successor:
            if self.stopping:
                logger.info("%s exited: %s", worker, how)
                if all(w.exit_code is not None for w in gen.workers):
                    self.successor = None
                return
            self.successor = None
            self._retire(gen, self._stop_signal())  # its other workers
            when = "as soon as it was" if worker.ready else "before it was"
            self._fail_reload(
                f"{worker} exited {when} ready: {how}"
                f"{_also(worker.refusal())}{self._outcomes(gen)}"
            )
        elif gen is self.current:
            if self.options.workers is None:
                self._on_current_exit(worker, how)
            else:
                self._on_worker_exit(worker, how)

    def _outcomes(self, gen: Generation) -> str:
        return "" if self.options.workers is None else f" ({gen.outcomes()})"

    def _linger(self, worker: Worker) -> None:
        """The leader is gone, its group is not: stop it, kill it in time."""
        self._lingering.append(worker)
        if not worker.asked_to_stop:
            worker.asked_to_stop = True
            worker.signal_group(self._stop_signal())
        if math.isinf(worker.kill_at):
            worker.kill_at = time.monotonic() + self._grace_or_fallback()

    def _on_current_exit(self, worker: Worker, how: str) -> None:
        assert worker.exit_code is not None
        if self.stopping or worker.exit_code == 0:
            logger.info("%s exited: %s", worker, how)
        if not self.stopping:
            if worker.exit_code != 0:
                logger.warning("%s exited on its own: %s; stopping", worker, how)
            targets = [w for w in self._live() if not w.asked_to_stop]
            self._begin_stop(f"{worker} exited")
            for other in targets:
                other.asked_to_stop = True
                other.signal_group(self._stop_signal())
        self._exit_code = worker.exit_code

    def _on_worker_exit(self, worker: Worker, how: str) -> None:
        """A worker of the serving generation exited: asked to, or on its own."""
        assert worker.exit_code is not None
        assert worker.index is not None
        if self.stopping or worker.asked_to_stop:
            logger.info("%s exited: %s", worker, how)
            self._exit_code = max(self._exit_code or 0, worker.exit_code)
            return
        delay = self._respawns.died(worker.index, time.monotonic())
        if delay is not None:
            logger.warning(
                "%s exited on its own: %s; replaced in %.1f s", worker, how, delay
            )
            return
        logger.error(
            "%s exited on its own: %s; worker %d died %d times within %g s:"
            " a crash loop, stopping",
            worker,
            how,
            worker.index,
            CRASH_LIMIT,
            CRASH_WINDOW,
        )
        self._exit_code = max(worker.exit_code, 1)
        targets = [w for w in self._live() if not w.asked_to_stop]
        self._begin_stop(f"worker {worker.index} crash loop")
        for other in targets:
            other.asked_to_stop = True
            other.signal_group(self._stop_signal())

    def _replace_due(self, now: float) -> None:
        gen = self.current
        if gen is None or self.stopping:
            return
        for index in self._respawns.take_due(now):
            try:
                worker = self._start_worker(gen.number, index)
            except OSError as error:
                logger.error("cannot replace worker %d: %s", index, error)  # noqa: TRY400
                if self._respawns.died(index, now) is None:
                    self._exit_code = 1
                    self._begin_stop(f"worker {index} cannot be started")
                continue
            old, gen.workers[index] = gen.workers[index], worker
            logger.info("%s started (replaces pid %d)", worker, old.pid)

    # -- readiness without READY=1 (--ready accepting, after:S) -------------------

    def _unready(self) -> list[Worker]:
        """The workers whose readiness the launcher must find out itself."""
        if self.options.ready.kind == "notify" or self.stopping:
            return []
        return [
            w
            for gen in (self.current, self.successor)
            if gen is not None
            for w in gen.workers
            if not w.ready and w.exit_code is None
        ]

    def _probe_deadline(self, worker: Worker) -> float:
        if self.options.ready.kind == "after":
            return worker.started_at + self.options.ready.seconds
        return worker.next_probe

    def _probe(self, now: float) -> None:
        for worker in self._unready():
            if now < self._probe_deadline(worker):
                continue
            if self.options.ready.kind == "accepting":
                # Bounded work per look; the next one a short while later.
                worker.next_probe = now + PROBE_INTERVAL
                if not is_accepting(worker.pid, self._inodes):
                    continue
            worker.ready = True
            self._on_ready(worker)

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        self._replace_due(now)
        self._probe(now)
        if self._control is not None:
            self._control.check_deadlines(now)
        successor = self.successor
        if (
            successor is not None
            and not self.stopping
            and not successor.ready
            and now >= successor.started_at + self.options.ready_timeout
        ):
            self.successor = None
            self._retire(successor, self._stop_signal())
            hint = "; ".join(w.refusal() for w in successor.workers if w.refusal())
            self._fail_reload(
                f"{successor} not ready within --ready-timeout "
                f"{self.options.ready_timeout:g} s (stopped)"
                f"{_also(hint)}{self._never_accepted()}{self._outcomes(successor)}"
            )
        for worker in self._live():
            if now >= worker.kill_at:
                logger.warning(
                    "%s still running after its grace period: SIGKILL", worker
                )
                worker.kill_at = math.inf
                worker.signal_group(signal.SIGKILL)

    def _never_accepted(self) -> str:
        if self.options.ready.kind != "accepting":
            return ""
        return "; --ready accepting: it never waited for connections on a handed socket"

    # -- reloads ---------------------------------------------------------------

    def request_reload(self, reply: Reply | None) -> None:
        """Begin a reload, or queue one (at most one) behind the running one."""
        if self.stopping:
            why = "stopping: reload refused"
            logger.info("%s", why)
            if reply is not None:
                reply(ok=False, text=why)
            return
        if self._reloads.request(reply):
            self._begin_reload()

    def _begin_reload(self) -> None:
        number = self._reloads.count
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._upstream(f"RELOADING=1\nMONOTONIC_USEC={now_usec}")
        try:
            self.successor = self._start_generation()
        except SpawnError as error:
            self._fail_reload(error.strerror or str(error))
            return
        except OSError as error:
            self._fail_reload(f"cannot start generation {self._count}: {error}")
            return
        logger.info("reload %d: %s started", number, self.successor)

    def _fail_reload(self, why: str) -> None:
        if self._reloads.running:
            self._count_reload("failed")
        serving = (
            f"{self.current} keeps serving" if self.current else "no generation serves"
        )
        logger.error("reload %d failed: %s; %s", self._reloads.count, why, serving)
        self._reloads.finish(ok=False, why=f"{why}; {serving}")
        self._upstream("READY=1")
        self._begin_queued()

    def _begin_queued(self) -> None:
        if not self.stopping and self._reloads.next():
            self._begin_reload()

    def _count_reload(self, outcome: ReloadOutcome) -> None:
        if self._metrics is None:
            return
        serving = 0 if self.current is None else self.current.number
        try:
            self._metrics.reload_ended(outcome, serving)
        except OSError as error:
            logger.warning("cannot write --metrics-file: %s", error.strerror or error)

    # -- the rest ----------------------------------------------------------------

    def request_dump(self) -> tuple[bool, str]:
        """SIGUSR1 to each live process of the serving generation (not its group:
        only a scope asked for it dumps); what was done, for the control socket."""
        if self.current is None or self.stopping:
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

    def register_control(self) -> None:
        """Serve ``shutdown-scope reload`` on the control socket, if any."""
        if self._control is not None:
            self._control.attach(self._selector, self.request_reload, self.request_dump)

    def _close(self) -> None:
        for worker in self._workers():
            worker.close()
        if self._control is not None:
            self._control.close()
        self._selector.close()
        self._runtime.close()  # with the workers' sockets
        if self._orphans > _ORPHANS_LOGGED:
            logger.info("%d orphans reaped in all", self._orphans)


def _watched(environ: dict[str, str]) -> bool:
    try:
        return watchdog_interval(environ) is not None
    except ValueError as error:
        logger.warning("no watchdog pings: %s", error)
        return False


def _also(text: str) -> str:
    return f"; {text}" if text else ""


def _fdname(listener: Listener) -> str:
    # LISTEN_FDNAMES: colon-separated, so a name must not hold one (systemd's rule).
    return listener.name.replace(":", "_")[:255]
