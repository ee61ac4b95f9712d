"""The launcher's loop: signals, readiness, reloads, and what each exit means.

Single-threaded and synchronous on purpose: as PID 1 it must keep working
whatever the child does. Signals arrive through the ``SignalInbox``'s pipe (the
handlers themselves do nothing), so one ``select`` waits for signals, notify
datagrams and control connections at once. The processes themselves are
``Children``'s; the ``Supervisor`` decides what happens to them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import selectors
import signal
import time
from collections.abc import Callable
from logging import INFO

from . import _events as events
from ._children import Children
from ._control import ControlServer, Reply
from ._generation import Worker, describe_exit
from ._log_output import room_for_log
from ._metrics_file import MetricsFile
from ._options import Options
from ._probes import Probes
from ._reload_flow import ReloadFlow, also, outcomes
from ._signal_inbox import FORWARDED, SignalInbox
from ._signal_routing import STOPPING, SignalRouting, signal_name
from ._workers import CRASH_LIMIT, CRASH_WINDOW, Respawns

__all__ = ["FORWARDED", "STOPPING", "Options", "Supervisor"]

logger = logging.getLogger("shutdown_scope.launcher")

# The longest single wait: epoll takes at most INT_MAX ms (24.8 days), so a
# farther deadline (--grace-period 3000000) is waited for in steps.
_LONGEST_WAIT = 86400.0


def _no_upstream(state: str) -> None:
    """No supervisor above the launcher: its notifications go nowhere."""


class Supervisor:
    """Runs generations of one command until it stops; ``run()`` is the exit code."""

    def __init__(
        self,
        options: Options,
        children: Children,
        *,
        signals: SignalInbox,
        control: ControlServer | None = None,
        notify_upstream: Callable[[str], None] | None = None,
        metrics: MetricsFile | None = None,
    ) -> None:
        self.options = options
        self._control = control
        self._upstream = notify_upstream or _no_upstream
        self._selector = selectors.DefaultSelector()
        self._children = children
        children.on_started = self._watch
        self._flow = ReloadFlow(
            options,
            self._children,
            upstream=self._upstream,
            metrics=metrics,
            is_stopping=lambda: self.stopping,
        )
        self._respawns = Respawns()
        self.stopping = False
        self._exit_code: int | None = None
        self._routing = SignalRouting(options.rewrite, options.debounce)
        self._signals = signals  # caught since the launcher's start; main() owns it
        self._probes = Probes(
            options.ready, [x.sock.fileno() for x in children.listeners]
        )

    # -- the loop ------------------------------------------------------------

    def run(self) -> int:
        """Supervise the first generation (started), and its successors, until
        every child has exited."""
        self._selector.register(self._signals, selectors.EVENT_READ, self._on_wakeup)
        children = self._children
        assert children.current is not None
        try:
            for worker in children.current.workers:
                self._watch(worker)
            while not self._finished():
                self._wait_once()
            assert self._exit_code is not None
            if self.options.workers is not None and children.current is not None:
                logger.info(
                    "exit code %d; %s", self._exit_code, children.current.outcomes()
                )
            return self._exit_code
        finally:
            self._close()

    def _finished(self) -> bool:
        return self._exit_code is not None and not self._children.live()

    def _wait_once(self) -> None:
        timeout = self._next_deadline() - time.monotonic()
        with room_for_log(self._selector):  # lines waiting for a full stderr
            ready = self._selector.select(
                None if math.isinf(timeout) else min(max(0.0, timeout), _LONGEST_WAIT)
            )
        # Exits first: a successor whose READY=1 and exit arrive together must
        # not take over (and stop the serving generation) as if it still ran.
        self._reap()
        for key, _ in ready:
            callback: Callable[[], None] = key.data
            callback()
        self._reap()
        self._check_deadlines()

    def _next_deadline(self) -> float:
        deadlines = self._children.deadlines()
        successor = self._children.successor
        if successor is not None and not successor.ready and not self.stopping:
            deadlines.append(successor.started_at + self.options.ready_timeout)
        deadlines.extend(self._probes.deadline(w) for w in self._unready())
        if not self.stopping:
            deadlines.append(self._respawns.next_due())
        if self._control is not None:
            deadlines.append(self._control.next_deadline())
        return min(deadlines, default=math.inf)

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        self._replace_due(now)
        for worker in self._probes.found_ready(self._unready(), now):
            self._on_ready(worker)
        if self._control is not None:
            self._control.check_deadlines(now)
        self._flow.check_ready_timeout(now, self._probes.never_accepted())
        self._children.kill_overdue(now)

    def _unready(self) -> list[Worker]:
        """The workers whose readiness the launcher must find out itself."""
        if self.stopping:
            return []
        return self._probes.unready((self._children.current, self._children.successor))

    # -- signals ---------------------------------------------------------------

    def _on_wakeup(self) -> None:
        for signum in self._signals.take():
            if signum != signal.SIGCHLD:
                self._on_signal(signum)

    def _on_signal(self, sig: int) -> None:
        sent = self._routing.route(sig, time.monotonic())
        if sent is None:
            return
        if sent == "reload":
            self.request_reload(None)
            return
        targets = self._children.live()
        if sig in STOPPING and not self.stopping:
            # A generation already draining after a reload was asked once; the
            # same signal again would make its scope skip to CANCELLING.
            targets = [w for w in targets if not w.asked_to_stop]
            self._begin_stop(f"received {signal_name(sig)}")
        for worker in targets:  # once each: every worker is a group of its own
            worker.signal_group(sent)
        events.forwarded(sig, sent, targets)

    def _begin_stop(self, why: str) -> None:
        if self.stopping:
            return
        self.stopping = True
        if self.options.workers is not None:
            # The exit code is the worst of the workers that stop from now on.
            self._exit_code = self._exit_code or 0
        self._respawns.clear()
        self._children.close_listeners()  # no generation starts after this one
        self._upstream("STOPPING=1")
        now = time.monotonic()
        for worker in self._children.live():
            worker.asked_to_stop = True
            worker.kill_at = min(worker.kill_at, now + self.options.grace_period)
        self._flow.interrupt(f"stopping ({why})")
        events.log(INFO, "stopping", f"stopping ({why})", reason=why)

    def _stop_all(self, why: str) -> None:
        """Stop, and ask each worker not asked before to stop too."""
        targets = [w for w in self._children.live() if not w.asked_to_stop]
        self._begin_stop(why)
        self._children.ask_unasked_to_stop(targets)

    # -- notifications -------------------------------------------------------------

    def _watch(self, worker: Worker) -> None:
        self._selector.register(
            worker.inbox.sock, selectors.EVENT_READ, lambda: self._on_notify(worker)
        )

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
        current = self._children.current
        serving = current is not None and self._children.generation_of(worker) is (
            current
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
        children = self._children
        gen = children.generation_of(worker)
        if self.stopping:
            logger.info("%s ready, but the launcher is stopping", worker)
            return
        if gen is None or not gen.ready:
            return
        if gen is children.current:
            how = self.options.ready
            said = "" if how.kind == "notify" else f" (--ready {how})"
            about = worker if gen.told_ready else gen
            events.log(INFO, "generation_ready", f"{about} ready{said}", about)
            if not gen.told_ready:
                gen.told_ready = True
                self._upstream("READY=1")
            return
        if gen is not children.successor or children.current is None:
            return
        old = children.current
        children.current, children.successor = gen, None
        gen.told_ready = True
        self._respawns.clear()  # the old generation's dead are not replaced
        children.retire(old, children.stop_signal())
        shown = f"{gen} ready" + outcomes(self.options, gen)
        sig_name = signal.Signals(children.stop_signal()).name
        self._flow.succeed(f"{shown}; {old} sent {sig_name}")

    # -- exits ---------------------------------------------------------------------

    def _reap(self) -> None:
        for worker in self._children.reap():
            self._on_exit(worker)

    def _on_exit(self, worker: Worker) -> None:
        assert worker.exit_code is not None
        children = self._children
        with contextlib.suppress(KeyError):
            self._selector.unregister(worker.inbox.sock)
        # Its last words still count (not READY=1: it no longer runs).
        self._relay(worker, worker.read_notifications())
        children.release(worker)
        how = describe_exit(worker.exit_code)
        gen = children.generation_of(worker)
        if gen is None:
            events.child_exited(worker, how)
        elif gen in children.retiring:
            events.child_exited(worker, how)
            children.forget_if_done(gen)
        elif gen is children.successor:
            if self.stopping:
                events.child_exited(worker, how)
                if all(w.exit_code is not None for w in gen.workers):
                    children.successor = None
                return
            children.successor = None
            children.retire(gen, children.stop_signal())  # its other workers
            when = "as soon as it was" if worker.ready else "before it was"
            self._flow.fail(
                f"{worker} exited {when} ready: {how}"
                f"{also(worker.refusal())}{outcomes(self.options, gen)}"
            )
        elif gen is children.current:
            if self.options.workers is None:
                self._on_current_exit(worker, how)
            else:
                self._on_worker_exit(worker, how)

    def _on_current_exit(self, worker: Worker, how: str) -> None:
        assert worker.exit_code is not None
        if self.stopping or worker.exit_code == 0:
            events.child_exited(worker, how)
        if not self.stopping:
            if worker.exit_code != 0:
                events.child_exited(worker, how, on_its_own=True, then="; stopping")
            self._stop_all(f"{worker} exited")
        self._exit_code = worker.exit_code

    def _on_worker_exit(self, worker: Worker, how: str) -> None:
        """A worker of the serving generation exited: asked to, or on its own."""
        assert worker.exit_code is not None
        assert worker.index is not None
        if self.stopping or worker.asked_to_stop:
            events.child_exited(worker, how)
            self._exit_code = max(self._exit_code or 0, worker.exit_code)
            return
        delay = self._respawns.died(worker.index, time.monotonic())
        if delay is not None:
            then = f"; replaced in {delay:.1f} s"
            events.child_exited(worker, how, on_its_own=True, then=then)
            return
        then = (
            f"; worker {worker.index} died {CRASH_LIMIT} times within"
            f" {CRASH_WINDOW:g} s: a crash loop, stopping"
        )
        events.child_exited(worker, how, on_its_own=True, then=then)
        self._exit_code = max(worker.exit_code, 1)
        self._stop_all(f"worker {worker.index} crash loop")

    def _replace_due(self, now: float) -> None:
        gen = self._children.current
        if gen is None or self.stopping:
            return
        for index in self._respawns.take_due(now):
            try:
                worker = self._children.start_worker(gen.number, index)
            except OSError as error:
                logger.error("cannot replace worker %d: %s", index, error)  # noqa: TRY400
                if self._respawns.died(index, now) is None:
                    self._exit_code = 1
                    self._begin_stop(f"worker {index} cannot be started")
                continue
            self._children.replace(gen, index, worker)

    # -- reloads ---------------------------------------------------------------

    def request_reload(self, reply: Reply | None) -> None:
        """Begin a reload, or queue one (at most one) behind the running one."""
        if self.stopping:
            why = "stopping: reload refused"
            logger.info("%s", why, extra=events.event("reload_refused", reason=why))
            if reply is not None:
                reply(ok=False, text=why)
            return
        self._flow.request(reply)

    # -- the rest ----------------------------------------------------------------

    def request_dump(self) -> tuple[bool, str]:
        """For ``shutdown-scope dump``: SIGUSR1 to the serving generation."""
        if self.stopping:
            return False, "dump: stopping"
        return self._children.ask_for_dump()

    def register_control(self) -> None:
        """Serve ``shutdown-scope reload`` on the control socket, if any."""
        if self._control is not None:
            self._control.attach(self._selector, self.request_reload, self.request_dump)

    def _close(self) -> None:
        self._children.close()
        if self._control is not None:
            self._control.close()
        self._selector.close()
