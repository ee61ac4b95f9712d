"""graceful_scope: the shutdown nursery, its services and its triggers."""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import threading
import warnings
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import ExitStack, asynccontextmanager
from typing import Any, final

import anyio
from anyio.abc import TaskGroup, TaskStatus

from ._backend import LoopHandle, current_loop_handle
from ._errors import ServiceNotStartedError
from ._machine import PhaseMachine
from ._phases import Phase, Plan, ShutdownPlanWarning, validate_signals
from ._report import ShutdownReport, report_sink
from ._sd_notify import open_scope_notifier
from ._service import Service, StartedRelay
from ._signals import SignalHandlers
from ._token import FlightNode, PhaseCell, ScopeShared, ShutdownToken
from ._watchdog import Watchdog

if sys.version_info < (3, 11):  # pragma: no cover -- only on 3.10
    from exceptiongroup import ExceptionGroup

__all__ = ["ShutdownScope", "graceful_scope"]

logger = logging.getLogger("shutdown_scope")


@final
class ShutdownScope:
    """The shutdown nursery that ``graceful_scope()`` yields.

    Start services with ``start``/``start_soon``; they stop in reverse start order
    when a signal arrives, ``request_shutdown()`` is called, a service raises, or
    everything has returned. Not created directly.
    """

    def __init__(
        self, *, plan: Plan, hard_exit: bool, hard_exit_code: int | None
    ) -> None:
        self._shared = shared = ScopeShared(cancel_timeout=plan.cancel_timeout)
        self._body = Service("body", cell=PhaseCell(), node=FlightNode(), shared=shared)
        self._services: list[Service] = []
        self._machine = PhaseMachine(
            plan=plan,
            shared=shared,
            body=self._body,
            services=self._services,
            hard_exit=hard_exit,
            hard_exit_code=hard_exit_code,
        )
        self._tg: TaskGroup | None = None
        self._handle: LoopHandle | None = None
        self._signals: SignalHandlers | None = None
        self._loop_thread = threading.get_ident()
        self._errors: list[Exception] = []
        self._inbox: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        self._inbox_ready = anyio.Event()
        self._report: ShutdownReport | None = None

    # -- public -------------------------------------------------------------

    @property
    def token(self) -> ShutdownToken:
        """The scope's own token: shows the scope's phase; the body's work."""
        return self._body.token

    @property
    def phase(self) -> Phase:
        """The scope's phase."""
        return self._machine.phase

    @property
    def report(self) -> ShutdownReport:
        """What the shutdown did. Exists once the ``async with`` block has exited.

        Raises:
            RuntimeError: the scope has not exited yet.
        """
        if self._report is None:
            msg = "scope.report exists once the graceful_scope() block has exited"
            raise RuntimeError(msg)
        return self._report

    @property
    def signals_received(self) -> int:
        """Shutdown signals counted so far (repeats within the debounce count once)."""
        handlers = self._signals
        return 0 if handlers is None else handlers.count

    def in_flight_by_service(self) -> dict[str, int]:
        """Units of work in flight per service, in start order; the body's own
        work under ``"body"``. Reads counters only, so a metrics exporter may
        call it from its own thread."""
        counts = {svc.name: svc.node.count for svc in tuple(self._services)}
        counts["body"] = max(0, self._body.node.count - sum(counts.values()))
        return counts

    async def start(
        self, fn: Callable[..., Awaitable[Any]], *args: object, name: str | None = None
    ) -> Any:
        """Start a service and wait until it calls ``task_status.started(value)``.

        ``fn(token, *args, task_status=...)`` runs in the scope. Returns the value
        passed to ``started()``. A checkpoint.

        Raises:
            RuntimeError: the shutdown has begun or the scope has exited.
            ServiceNotStartedError: the service returned, or the shutdown stopped
                it, before it called ``started()``.
            Exception: whatever the service raised before ``started()``.
        """
        svc = self._add_service(fn, name)
        tg = self._tg
        assert tg is not None  # _add_service checked it
        try:
            return await tg.start(self._run_service, svc, fn, args, True)  # noqa: FBT003
        except RuntimeError as exc:
            if svc.outcome != "not started" or exc is svc.error:
                raise  # not anyio's "exited without calling started()"
        # Stopped by the shutdown: cancelled, or it saw its token and returned.
        by_shutdown = svc.cancel_scope.cancel_called or svc.token.stop_requested
        raise ServiceNotStartedError(svc.name, by_shutdown=by_shutdown)

    def start_soon(
        self, fn: Callable[..., Awaitable[Any]], *args: object, name: str | None = None
    ) -> None:
        """Start a service without waiting: ``fn(token, *args)``.

        Raises:
            RuntimeError: the shutdown has begun or the scope has exited.
        """
        svc = self._add_service(fn, name)
        assert self._tg is not None  # _add_service checked it
        self._tg.start_soon(self._run_service, svc, fn, args, False, name=svc.name)  # noqa: FBT003

    def request_shutdown(self, reason: str = "shutdown requested") -> None:
        """Begin the shutdown. Idempotent, synchronous, and safe from any thread.

        Later calls (and calls after the scope ended) do nothing.
        """
        if not isinstance(reason, str):
            msg = f"reason must be a str, not {type(reason).__name__}"
            raise TypeError(msg)
        if threading.get_ident() == self._loop_thread:
            self._machine.begin("request", reason)
        elif self._handle is not None:
            self._handle.run_sync_soon(
                self._post, self._machine.begin, "request", reason
            )

    # -- services -------------------------------------------------------------

    def _add_service(
        self, fn: Callable[..., Awaitable[Any]], name: str | None
    ) -> Service:
        if not callable(fn):
            msg = f"a service must be an async function, not {fn!r}"
            raise TypeError(msg)
        if name is not None and not isinstance(name, str):
            msg = f"name must be a str or None, not {name!r}"
            raise TypeError(msg)
        if self._tg is None or self._report is not None:
            msg = "this graceful_scope is not running: start services inside its block"
            raise RuntimeError(msg)
        if self._machine.trigger is not None:
            msg = (
                "cannot start a service: the shutdown has begun"
                f" ({self._shared.reason});"
                " check token.stop_requested before starting more work"
            )
            raise RuntimeError(msg)
        inner = fn
        while isinstance(inner, functools.partial):  # bound keyword options
            inner = inner.func
        base = name or getattr(inner, "__name__", None) or repr(fn)
        taken = {s.name for s in self._services}
        unique, n = base, 1
        while unique in taken:
            n += 1
            unique = f"{base}#{n}"
        svc = Service(
            unique,
            cell=PhaseCell(),
            node=FlightNode(self._body.node, prefix=f"{unique}: "),
            shared=self._shared,
        )
        self._services.append(svc)
        return svc

    async def _run_service(
        self,
        svc: Service,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[object, ...],
        via_start: bool,  # noqa: FBT001 -- positional for tg.start
        *,
        task_status: TaskStatus[Any] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        if not via_start:
            svc.started = True
        try:
            with svc.cancel_scope:
                if via_start:
                    await fn(
                        svc.token, *args, task_status=StartedRelay(svc, task_status)
                    )
                else:
                    await fn(svc.token, *args)
        except Exception as exc:
            svc.error = exc
            if not svc.started:
                svc.outcome = "not started"
                raise  # scope.start() re-raises it to its caller
            svc.outcome = "failed"
            self._errors.append(exc)
            logger.exception("service %r failed", svc.name)
            self._machine.begin("error", f"service {svc.name!r} raised {exc!r}")
        except BaseException:
            # Cancelled from outside the scope (ours is caught by cancel_scope),
            # or KeyboardInterrupt and the like: no graceful stop.
            svc.outcome, svc.cancelled_in_flight = "cancelled", svc.node.snapshot()
            self._machine.trigger = self._machine.trigger or "cancelled"
            raise
        else:
            if not svc.started:
                svc.outcome = "not started"
        finally:
            svc.finish(anyio.current_time())
            self._check_all_done()

    def _check_all_done(self) -> None:
        if self._body.done.is_set() and all(s.done.is_set() for s in self._services):
            self._machine.begin("finished", "the body and every service returned")

    def _body_failed(self, exc: Exception) -> None:
        if isinstance(exc, ServiceNotStartedError) and exc.by_shutdown:
            return  # the shutdown interrupted a start: part of a normal stop
        self._body.outcome, self._body.error = "failed", exc
        self._errors.append(exc)
        self._machine.begin("error", f"the scope's body raised {exc!r}")

    # -- signals and other threads ----------------------------------------------

    def _on_signal(self, sig: signal.Signals, count: int) -> None:
        """Runs inside the signal handler: only signal-safe calls here."""
        machine, handle = self._machine, self._handle
        assert handle is not None
        if machine.phase == Phase.DONE:
            return  # the scope is over; its handlers are about to be restored
        if count == 1:
            # Armed here, not only from the loop, in case the loop is blocked.
            machine.arm_watchdog(machine.plan.total, sig)
            reason = f"received {sig.name}"
            handle.run_sync_soon(self._post, machine.begin, "signal", reason, sig)
        elif count >= 3 or machine.phase >= Phase.CANCELLING:  # noqa: PLR2004 -- third
            assert machine.watchdog is not None  # there is one whenever signals are
            code = machine.exit_code(machine.signal or sig)
            machine.watchdog.fire_now(f"{sig.name} received {count} times", code)
        else:
            handle.run_sync_soon(self._post, machine.escalate, sig)

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        """Runs as a loop callback, outside any task, where anyio's API does not
        work on asyncio: hand the call to the inbox task."""
        self._inbox.append((fn, args))
        self._inbox_ready.set()

    async def _serve_inbox(self) -> None:
        while True:
            await self._inbox_ready.wait()
            self._inbox_ready = anyio.Event()
            while self._inbox:
                fn, args = self._inbox.popleft()
                fn(*args)

    async def _supervise(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._serve_inbox)
            await self._machine.run()
            tg.cancel_scope.cancel()

    # -- the lifetime ---------------------------------------------------------

    def _build_report(self) -> ShutdownReport:
        machine, body = self._machine, self._body
        end = anyio.current_time()
        t0 = min(machine.t0, end)
        services = [s.record(t0) for s in self._services]
        if body.stop_requested_at is not None or body.outcome != "returned":
            services.append(body.record(t0))
        return ShutdownReport(
            trigger=machine.trigger or "cancelled",
            reason=self._shared.reason or "cancelled from outside the scope",
            signal=None if machine.signal is None else int(machine.signal),
            signals_received=0 if self._signals is None else self._signals.count,
            phases=machine.phase_records(end),
            services=tuple(services),
            errors=tuple(self._errors),
            duration=end - t0,
        )

    def _guard(
        self,
        stack: ExitStack,
        *,
        signals: tuple[signal.Signals, ...],
        hard_exit: bool,
    ) -> None:
        """Install the signal handlers and the watchdog thread; ``stack`` undoes."""
        machine, handle = self._machine, self._handle
        assert handle is not None  # _open set it
        if signals:
            self._signals = stack.enter_context(
                SignalHandlers(
                    signals,
                    debounce=machine.plan.signal_debounce,
                    on_signal=self._on_signal,
                )
            )
            stack.enter_context(handle.wake_on_signals())
        if hard_exit or signals:
            watchdog = Watchdog(
                describe=machine.describe,
                dump_tasks=handle.dump_tasks,
                block_signals=signals,
            )
            stack.callback(watchdog.stop)
            machine.watchdog = watchdog
            watchdog.start()

    @classmethod
    @asynccontextmanager
    async def _open(
        cls,
        *,
        plan: Plan,
        signals: tuple[signal.Signals, ...],
        hard_exit: bool,
        hard_exit_code: int | None,
        systemd_notify: bool,
    ) -> AsyncIterator[ShutdownScope]:
        scope = cls(plan=plan, hard_exit=hard_exit, hard_exit_code=hard_exit_code)
        machine = scope._machine
        scope._handle = current_loop_handle()
        with ExitStack() as stack:
            notifier = None
            if systemd_notify:
                notifier = stack.enter_context(open_scope_notifier(machine, os.environ))
            scope._guard(stack, signals=signals, hard_exit=hard_exit)
            try:
                async with anyio.create_task_group() as tg:
                    scope._tg = tg
                    tg.start_soon(scope._supervise, name="shutdown_scope supervisor")
                    if notifier is not None:
                        machine.on_enter = notifier.phase_entered
                        tg.start_soon(notifier.run, name="shutdown_scope notifier")
                    try:
                        with scope._body.cancel_scope:
                            yield scope
                    except Exception as exc:  # noqa: BLE001 -- re-raised in the group
                        scope._body_failed(exc)
                    except BaseException:
                        # Cancelled from outside: no graceful stop; the caller
                        # wants out.
                        machine.trigger = machine.trigger or "cancelled"
                        raise
                    finally:
                        scope._body.finish(anyio.current_time())
                        scope._check_all_done()
                        if notifier is not None and machine.trigger is None:
                            notifier.body_returned()  # its services are up
            finally:
                scope._body.cell.advance(Phase.DONE)
                machine.stop_watchdog()
                report = scope._report = scope._build_report()
                level = logging.INFO if report.clean else logging.WARNING
                logger.log(level, "shutdown_scope: %s", report)
                sink = report_sink.get()
                if sink is not None:
                    sink.append(report)
                if notifier is not None:
                    notifier.finish(report)
        if report.errors:
            msg = (
                f"graceful_scope: {len(report.errors)} error(s) in the body or services"
            )
            raise ExceptionGroup(msg, list(report.errors))


@asynccontextmanager
async def graceful_scope(
    *,
    signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT),
    announce_delay: float = 0.0,
    drain_timeout: float = 20.0,
    cancel_timeout: float = 5.0,
    hard_exit: bool = True,
    hard_exit_code: int | None = None,
    grace_period: float | None = None,
    signal_debounce: float = 0.2,
    systemd_notify: bool = True,
) -> AsyncIterator[ShutdownScope]:
    """Open a shutdown nursery: services run in it and stop in staged phases.

    Args:
        signals: signals that begin the shutdown; a second one skips to
            CANCELLING, a third exits hard. ``()`` installs no handlers (needed
            outside the main thread and in nested scopes).
        announce_delay: seconds in STOPPING, readiness already failing, before
            the first service is asked to stop accepting work.
        drain_timeout: seconds for in-flight work to finish, after the announce.
        cancel_timeout: seconds for cancelled services to clean up.
        hard_exit: run a watchdog thread that ends the process (``os._exit``) with
            a dump of threads and tasks when the whole budget is spent. (A third
            signal exits hard even with ``hard_exit=False``: a person means it.)
        hard_exit_code: the watchdog's exit code; default 128 + the signal
            number if a signal began the shutdown, else 1.
        grace_period: the orchestrator's window before SIGKILL; a warning is
            given at entry if the budgets do not fit in it.
        signal_debounce: seconds within which repeated signals count once.
        systemd_notify: under a systemd service (``NOTIFY_SOCKET`` set), tell
            systemd about the scope: ``READY=1`` when the body returns with
            its services started and no shutdown begun (a body that runs until
            the shutdown calls ``shutdown_scope.systemd.notify("READY=1")``
            itself); ``STOPPING=1`` and a ``STATUS=`` line at each phase; during
            the shutdown ``EXTEND_TIMEOUT_USEC=`` up to the end of the budget,
            again each second in which the work in flight changed; and
            ``WATCHDOG=1`` every half ``WATCHDOG_USEC`` while the scope is open.
            Only the outermost open scope notifies. A socket that cannot be
            reached is logged once; the scope goes on. False: none of it.

    Raises:
        TypeError, ValueError: an invalid option (the message states the rule).
        RuntimeError: signals requested outside the main thread, or already
            handled by an enclosing scope.
        ExceptionGroup: at exit, if the body or services raised.
    """
    plan = Plan.from_options(
        announce_delay=announce_delay,
        drain_timeout=drain_timeout,
        cancel_timeout=cancel_timeout,
        grace_period=grace_period,
        signal_debounce=signal_debounce,
    )
    sigs = validate_signals(signals)
    for name, flag in (("hard_exit", hard_exit), ("systemd_notify", systemd_notify)):
        if not isinstance(flag, bool):
            msg = f"{name} must be True or False, not {flag!r}"
            raise TypeError(msg)
    if hard_exit_code is not None:
        if isinstance(hard_exit_code, bool) or not isinstance(hard_exit_code, int):
            msg = f"hard_exit_code must be None or an int, not {hard_exit_code!r}"
            raise TypeError(msg)
        if not 0 <= hard_exit_code <= 255:  # noqa: PLR2004 -- the range of exit codes
            msg = f"hard_exit_code must be from 0 to 255, not {hard_exit_code}"
            raise ValueError(msg)
    misfit = plan.misfit()
    if misfit is not None:
        warnings.warn(misfit, ShutdownPlanWarning, stacklevel=3)

    opened = ShutdownScope._open(  # noqa: SLF001 -- the scope's own constructor
        plan=plan,
        signals=sigs,
        hard_exit=hard_exit,
        hard_exit_code=hard_exit_code,
        systemd_notify=systemd_notify,
    )
    async with opened as scope:
        yield scope
