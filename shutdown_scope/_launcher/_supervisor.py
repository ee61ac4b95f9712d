"""The launcher's loop: signals, reaping, readiness, reloads.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from shutdown_scope._sd_protocol import MANAGER_VARIABLES, watchdog_interval

from ._control import ControlServer, Reply
from ._generation import Generation, describe_exit, exit_code_of
from ._metrics_file import MetricsFile, ReloadOutcome
from ._notify import NotifyAccess, NotifyInbox
from ._runtime_dir import RuntimeDir
from ._signal_inbox import FORWARDED, HANDLED, SignalInbox
from ._sockets import Listener
from ._spawn import SpawnError, spawn

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


@dataclass(frozen=True)
class Options:
    """What ``shutdown-scope run`` was asked to do."""

    command: Sequence[str]
    rewrite: dict[int, int] = field(default_factory=dict)
    grace_period: float = math.inf
    ready_timeout: float = 30.0
    debounce: float = 0.2
    notify_access: NotifyAccess = "main"


def _no_upstream(state: str) -> None:
    """No supervisor above the launcher: its notifications go nowhere."""


class _ReloadRequest:
    """One reload's callers: they all hear its outcome."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []


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
        self._runtime = RuntimeDir()  # the generations' notify sockets
        self._count = 0
        self.current: Generation | None = None
        self.successor: Generation | None = None
        self.retiring: list[Generation] = []
        # Leaders gone, process groups maybe not: waited for, killed at the deadline.
        self._lingering: list[Generation] = []
        self._reload: _ReloadRequest | None = None  # the one running
        self._queued: _ReloadRequest | None = None
        self._reloads = 0
        self.stopping = False
        self._exit_code: int | None = None
        self._last_signal: dict[int, float] = {}
        self._signals = signals  # caught since the launcher's start; main() owns it

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
            return self._exit_code
        finally:
            self._close()

    def _finished(self) -> bool:
        return self._exit_code is not None and not self._live()

    def _live(self) -> list[Generation]:
        live: list[Generation] = []
        for gen in (self.current, self.successor, *self.retiring, *self._lingering):
            if gen is not None and all(gen is not x for x in live) and gen.alive:
                live.append(gen)
        return live

    def _wait_once(self) -> None:
        timeout = self._next_deadline() - time.monotonic()
        events = self._selector.select(
            None if math.isinf(timeout) else min(max(0.0, timeout), _LONGEST_WAIT)
        )
        for key, _ in events:
            callback: Callable[[], None] = key.data
            callback()
        self._reap()
        self._check_deadlines()

    def _next_deadline(self) -> float:
        deadlines = [g.kill_at for g in self._live()]
        if any(g.alive for g in self._lingering):
            # Members of a group do not all report to us (no subreaper): poll.
            deadlines.append(time.monotonic() + _GROUP_POLL)
        successor = self.successor
        if successor is not None and not successor.ready and not self.stopping:
            deadlines.append(successor.started_at + self.options.ready_timeout)
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
            targets = [g for g in targets if not g.asked_to_stop]
            self._begin_stop(f"received {sig.name}")
        for gen in targets:
            gen.signal_group(sent)
        names = ", ".join(str(g) for g in targets) or "no child"
        shown = (
            sig.name if sent == sig else f"{sig.name} as {signal.Signals(sent).name}"
        )
        logger.info("%s forwarded to %s", shown, names)

    def _begin_stop(self, why: str) -> None:
        if self.stopping:
            return
        self.stopping = True
        # No generation starts after this one: the launcher's copies would only
        # keep the sockets open, so that connections the kernel still queued once
        # the children close theirs would hang, then be reset.
        for listener in self.listeners:
            listener.sock.close()
        self._upstream("STOPPING=1")
        now = time.monotonic()
        for gen in self._live():
            gen.asked_to_stop = True
            gen.kill_at = min(gen.kill_at, now + self.options.grace_period)
        if self._reload is not None:
            self._count_reload("interrupted")
        for request in (self._reload, self._queued):
            if request is not None:
                self._answer(request, ok=False, why=f"stopping ({why})")
        self._reload = self._queued = None
        logger.info("stopping (%s)", why)

    def _stop_signal(self) -> int:
        return (
            self.options.rewrite.get(signal.SIGTERM, signal.SIGTERM) or signal.SIGTERM
        )

    # -- generations -----------------------------------------------------------

    def _start_generation(self) -> Generation:
        self._count += 1
        number = self._count
        sock, path = self._runtime.bind_datagram(f"notify-{number}")
        try:
            inbox = NotifyInbox.adopt(sock, path, self.options.notify_access)
        except BaseException:
            self._runtime.remove(path)
            raise
        env = dict(self._base_env)
        env["NOTIFY_SOCKET"] = path
        env["SHUTDOWN_SCOPE_GENERATION"] = str(number)
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
        gen = Generation(number, pid, inbox, started_at=time.monotonic())
        self._selector.register(
            inbox.sock, selectors.EVENT_READ, lambda: self._on_notify(gen)
        )
        return gen

    def _on_notify(self, gen: Generation) -> None:
        was_ready = gen.ready
        datagrams = gen.read_notifications()
        if gen.ready and not was_ready:
            self._on_ready(gen)
        elif gen.refusal() and not gen.refusal_told:
            # Under systemd, `systemctl status` shows why the service is not ready.
            gen.refusal_told = True
            self._upstream(f"STATUS={gen}: {gen.refusal()}")
        for lines in datagrams:  # one by one: each fits a datagram
            relayed = [
                line
                for line in lines
                if (gen is self.current and line.startswith(("STATUS=", "WATCHDOG=1")))
                or (self.stopping and line.startswith("EXTEND_TIMEOUT_USEC="))
            ]
            if relayed:
                self._upstream("\n".join(relayed))

    def _on_ready(self, gen: Generation) -> None:
        if self.stopping:
            logger.info("%s ready, but the launcher is stopping", gen)
            return
        if gen is self.current:
            logger.info("%s ready", gen)
            self._upstream("READY=1")
            return
        if gen is not self.successor or self.current is None:
            return
        old = self.current
        self.current, self.successor = gen, None
        self._retire(old, self._stop_signal())
        assert self._reload is not None
        why = f"{gen} ready; {old} sent {signal.Signals(self._stop_signal()).name}"
        self._count_reload("done")  # first: whoever hears the outcome sees it
        self._answer(self._reload, ok=True, why=why)
        self._upstream("READY=1")
        self._reload = None
        self._start_queued()

    def _grace_or_fallback(self) -> float:
        grace = self.options.grace_period
        return _FAILED_SUCCESSOR_GRACE if math.isinf(grace) else grace

    def _retire(self, gen: Generation, sig: int) -> None:
        gen.asked_to_stop = True
        grace = self.options.grace_period
        if gen is not self.current and not gen.ready:
            grace = self._grace_or_fallback()
        gen.kill_at = time.monotonic() + grace
        gen.signal_group(sig)
        self.retiring.append(gen)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            gen = self._generation(pid)
            if gen is None:
                logger.info(
                    "reaped orphan pid %d (%s)",
                    pid,
                    describe_exit(exit_code_of(status)),
                )
                continue
            gen.exit_code = exit_code_of(status)
            self._on_exit(gen)

    def _generation(self, pid: int) -> Generation | None:
        for gen in (self.current, self.successor, *self.retiring):
            if gen is not None and gen.pid == pid:
                return gen
        return None

    def _on_exit(self, gen: Generation) -> None:
        assert gen.exit_code is not None
        with contextlib.suppress(KeyError):
            self._selector.unregister(gen.inbox.sock)
        gen.read_notifications()
        gen.close()
        self._runtime.remove(gen.inbox.path)
        if gen.alive:  # its process group lives on
            self._linger(gen)
        how = describe_exit(gen.exit_code)
        if gen in self.retiring:
            self.retiring.remove(gen)
            logger.info("%s exited: %s", gen, how)
        elif gen is self.successor:
            self.successor = None
            if self.stopping:
                logger.info("%s exited: %s", gen, how)
            else:
                self._fail_reload(
                    f"{gen} exited before it was ready: {how}{_also(gen.refusal())}"
                )
        elif gen is self.current:
            self._on_current_exit(gen, how)

    def _linger(self, gen: Generation) -> None:
        """The leader is gone, its group is not: stop it, kill it in time."""
        self._lingering.append(gen)
        if not gen.asked_to_stop:
            gen.asked_to_stop = True
            gen.signal_group(self._stop_signal())
        if math.isinf(gen.kill_at):
            gen.kill_at = time.monotonic() + self._grace_or_fallback()

    def _on_current_exit(self, gen: Generation, how: str) -> None:
        assert gen.exit_code is not None
        if self.stopping or gen.exit_code == 0:
            logger.info("%s exited: %s", gen, how)
        if not self.stopping:
            if gen.exit_code != 0:
                logger.warning("%s exited on its own: %s; stopping", gen, how)
            targets = [g for g in self._live() if not g.asked_to_stop]
            self._begin_stop(f"{gen} exited")
            for other in targets:
                other.asked_to_stop = True
                other.signal_group(self._stop_signal())
        self._exit_code = gen.exit_code

    def _check_deadlines(self) -> None:
        now = time.monotonic()
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
            self._fail_reload(
                f"{successor} not ready within --ready-timeout "
                f"{self.options.ready_timeout:g} s (stopped)"
                f"{_also(successor.refusal())}"
            )
        for gen in self._live():
            if now >= gen.kill_at:
                logger.warning("%s still running after its grace period: SIGKILL", gen)
                gen.kill_at = math.inf
                gen.signal_group(signal.SIGKILL)

    # -- reloads ---------------------------------------------------------------

    def request_reload(self, reply: Reply | None) -> None:
        """Begin a reload, or queue one (at most one) behind the running one."""
        if self.stopping:
            why = "stopping: reload refused"
            logger.info("%s", why)
            if reply is not None:
                reply(ok=False, text=why)
            return
        if self._reload is None:
            self._reload = _ReloadRequest()
            if reply is not None:
                self._reload.replies.append(reply)
            self._begin_reload()
            return
        if self._queued is None:
            self._queued = _ReloadRequest()
            logger.info("reload %d in progress: one more reload queued", self._reloads)
        else:
            logger.info(
                "reload %d in progress and one queued: this request joins it",
                self._reloads,
            )
        if reply is not None:
            self._queued.replies.append(reply)

    def _begin_reload(self) -> None:
        self._reloads += 1
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
        logger.info("reload %d: %s started", self._reloads, self.successor)

    def _fail_reload(self, why: str) -> None:
        if self._reload is not None:
            self._count_reload("failed")
        serving = (
            f"{self.current} keeps serving" if self.current else "no generation serves"
        )
        logger.error("reload %d failed: %s; %s", self._reloads, why, serving)
        if self._reload is not None:
            self._answer(self._reload, ok=False, why=f"{why}; {serving}")
        self._reload = None
        self._upstream("READY=1")
        self._start_queued()

    def _start_queued(self) -> None:
        if self._queued is not None and not self.stopping:
            self._reload, self._queued = self._queued, None
            self._begin_reload()

    def _count_reload(self, outcome: ReloadOutcome) -> None:
        if self._metrics is None:
            return
        serving = 0 if self.current is None else self.current.number
        try:
            self._metrics.reload_ended(outcome, serving)
        except OSError as error:
            logger.warning("cannot write --metrics-file: %s", error.strerror or error)

    def _answer(self, request: _ReloadRequest, *, ok: bool, why: str) -> None:
        if ok:
            logger.info("reload %d: done; %s", self._reloads, why)
        for reply in request.replies:
            reply(ok=ok, text=f"reload {self._reloads}: {why}")
        request.replies.clear()

    # -- the rest ----------------------------------------------------------------

    def register_control(self) -> None:
        """Serve ``shutdown-scope reload`` on the control socket, if any."""
        if self._control is not None:
            self._control.attach(self._selector, self.request_reload)

    def _close(self) -> None:
        for gen in (self.current, self.successor, *self.retiring, *self._lingering):
            if gen is not None:
                gen.close()
        if self._control is not None:
            self._control.close()
        self._selector.close()
        self._runtime.close()  # with the generations' sockets


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
