"""The life of one scope: what it installs, the tasks it runs, its report.

``open_runtime`` wires the parts together: the ``ShutdownState`` (the one
writer), the ``Escalation`` (every trigger; the watchdog's only user), the
signal registry's subscription, the phase machine, the systemd notifier and
the dump, and builds the report at the end.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from ._backend import LoopHandle, current_loop_handle
from ._dump import serve_dumps
from ._escalation import Escalation
from ._machine import PhaseMachine, first_of
from ._phases import Plan
from ._report import ShutdownReport, report_sink
from ._sd_notify import open_scope_notifier
from ._service import Service, StartedRelay
from ._signal_registry import subscribe
from ._state import ShutdownState
from ._watchdog import Watchdog
from .signals import SignalReceiver, open_signal_receiver

if sys.version_info < (3, 11):  # pragma: no cover -- only on 3.10
    from exceptiongroup import ExceptionGroup

__all__ = ["Runtime", "open_runtime"]

logger = logging.getLogger("shutdown_scope")


class Runtime:
    """What a running scope's front end (``ShutdownScope``) works with."""

    def __init__(
        self,
        state: ShutdownState,
        escalation: Escalation,
        handle: LoopHandle,
        start_warning: float,
    ) -> None:
        self.state = state
        self.handle = handle
        self.escalation = escalation
        self.start_warning = start_warning
        self.loop_thread: int = threading.get_ident()
        self.tg: TaskGroup | None = None
        self.report: ShutdownReport | None = None

    async def run_service(
        self,
        svc: Service,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[object, ...],
        via_start: bool,  # noqa: FBT001 -- positional for tg.start
        *,
        task_status: TaskStatus[Any] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        state = self.state
        try:
            with svc.cancel_scope:
                if via_start:
                    relay = StartedRelay(svc, task_status, state.mark_started)
                    await fn(svc.token, *args, task_status=relay)
                else:
                    await fn(svc.token, *args)
        except Exception as exc:
            if not state.service_raised(svc, exc):
                raise  # scope.start() re-raises it to its caller
            logger.exception("service %r failed", svc.name)
            self.escalation.trigger("error", f"service {svc.name!r} raised {exc!r}")
        except BaseException:
            # Cancelled from outside the scope (ours is caught by cancel_scope),
            # or KeyboardInterrupt and the like: no graceful stop.
            state.service_interrupted(svc)
            raise
        finally:
            state.finish(svc)

    async def warn_unless_started(self, svc: Service) -> None:
        """Name a service still not started after ``start_warning`` seconds."""
        with anyio.move_on_after(self.start_warning):
            await first_of(svc.started_event.wait, svc.done.wait)
            return
        logger.warning(
            "shutdown_scope: service %r has not called task_status.started() after"
            " %g s; scope.start() is still waiting for it",
            svc.name,
            self.start_warning,
            extra={"event": "service_not_started", "service": svc.name},
        )

    def close(self) -> ShutdownReport:
        """The scope is over: its report, logged once and handed to ``run()``."""
        received = self.escalation.signals_received
        report = self.report = self.state.report(signals_received=received)
        # The one place the report is printed: INFO when clean, else WARNING
        # (which reaches stderr even without logging configured).
        level = logging.INFO if report.clean else logging.WARNING
        fields = {
            "event": "report",
            "clean": report.clean,
            "exit_code": report.exit_code,
            "report": report.as_dict(),
        }
        logger.log(level, "shutdown_scope: %s", report, extra=fields)
        sink = report_sink.get()
        if sink is not None:
            sink.append(report)
        return report

    async def supervise(self, dumps: SignalReceiver | None) -> None:
        state = self.state
        async with anyio.create_task_group() as tg:
            tg.start_soon(state.serve_inbox)
            if dumps is not None:
                tg.start_soon(serve_dumps, state, self.handle, dumps)
            await PhaseMachine(state, self.escalation).run()
            tg.cancel_scope.cancel()


async def _install_guards(
    stack: AsyncExitStack,
    runtime: Runtime,
    watchdog: Watchdog | None,
    signals: tuple[signal.Signals, ...],
    dump_signal: signal.Signals | None,
) -> SignalReceiver | None:
    """Subscribe the scope to its signals, start the watchdog; ``stack`` undoes.

    Returns the dump signal's receiver, if any.
    """
    if watchdog is not None:
        stack.callback(watchdog.close)
    if signals:
        subscription = subscribe(
            signals,
            runtime.escalation.on_signal,
            what="graceful_scope()",
            hint="enter it in the main thread, or pass signals=() and call"
            " scope.request_shutdown() yourself",
            scope_owner=True,
        )
        stack.callback(subscription.close)
        stack.enter_context(runtime.handle.wake_on_signals())
    dumps = None
    if dump_signal is not None:
        receiver = open_signal_receiver(dump_signal, buffer_size=1)
        dumps = await stack.enter_async_context(receiver)
    if watchdog is not None:
        watchdog.start()
    return dumps


@asynccontextmanager
async def open_runtime(
    *,
    plan: Plan,
    signals: tuple[signal.Signals, ...],
    hard_exit: bool,
    hard_exit_code: int | None,
    systemd_notify: bool,
    dump_signal: signal.Signals | None,
) -> AsyncIterator[Runtime]:
    """Run a scope around the body of ``graceful_scope``."""
    handle = current_loop_handle()
    state = ShutdownState(plan=plan, handle=handle)
    watchdog = None
    if hard_exit or signals:
        # Process-directed signals go to the main thread, whose handler counts.
        watchdog = Watchdog(
            describe=state.describe, dump_tasks=handle.dump_tasks, block_signals=signals
        )
    escalation = Escalation(
        state, watchdog=watchdog, hard_exit=hard_exit, hard_exit_code=hard_exit_code
    )
    runtime = Runtime(state, escalation, handle, plan.start_warning)
    async with AsyncExitStack() as stack:
        notifier = None
        if systemd_notify:
            notifier = stack.enter_context(open_scope_notifier(state, os.environ))
        dumps = await _install_guards(stack, runtime, watchdog, signals, dump_signal)
        try:
            async with anyio.create_task_group() as tg:
                runtime.tg = tg
                tg.start_soon(
                    runtime.supervise, dumps, name="shutdown_scope supervisor"
                )
                if notifier is not None:
                    tg.start_soon(notifier.run, name="shutdown_scope notifier")
                try:
                    with state.body.cancel_scope:
                        yield runtime
                except Exception as exc:  # noqa: BLE001 -- re-raised in the group
                    if state.body_raised(exc):
                        reason = f"the scope's body raised {exc!r}"
                        escalation.trigger("error", reason)
                except BaseException:
                    # Cancelled from outside: no graceful stop; the caller
                    # wants out.
                    state.cancelled_from_outside()
                    raise
                finally:
                    state.finish(state.body)
                    if notifier is not None and state.trigger is None:
                        notifier.body_returned()  # its services are up
        finally:
            report = runtime.close()
            if notifier is not None:
                notifier.finish(report)
    if report.errors:
        msg = f"graceful_scope: {len(report.errors)} error(s) in the body or services"
        raise ExceptionGroup(msg, list(report.errors))
