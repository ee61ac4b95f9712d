"""graceful_scope and ShutdownScope: the front end of a scope.

The work is done elsewhere: ``_lifetime`` runs the scope, ``_state`` writes its
shutdown state, ``_escalation`` takes its triggers, ``_machine`` stops its
services.
"""

from __future__ import annotations

import math
import signal
import threading
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, final

from ._errors import ServiceNotStartedError
from ._lifetime import Runtime, open_runtime
from ._misuse import check_service, service_name
from ._phases import (
    Phase,
    Plan,
    ShutdownPlanWarning,
    validate_dump_signal,
    validate_exit_code,
    validate_flags,
    validate_signals,
)
from ._report import ShutdownReport
from ._service import Service
from ._token import ShutdownToken

__all__ = ["ShutdownScope", "graceful_scope"]


@final
class ShutdownScope:
    """The shutdown nursery that ``graceful_scope()`` yields.

    Start services with ``start``/``start_soon``; they stop in reverse start order
    when a signal arrives, ``request_shutdown()`` is called, a service raises, or
    everything has returned. Not created directly.
    """

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    @property
    def token(self) -> ShutdownToken:
        """The scope's own token: shows the scope's phase; the body's work."""
        return self._runtime.state.body.token

    @property
    def phase(self) -> Phase:
        """The scope's phase."""
        return self._runtime.state.phase

    @property
    def report(self) -> ShutdownReport:
        """What the shutdown did. Exists once the ``async with`` block has exited.

        Raises:
            RuntimeError: the scope has not exited yet.
        """
        if self._runtime.report is None:
            msg = "scope.report exists once the graceful_scope() block has exited"
            raise RuntimeError(msg)
        return self._runtime.report

    @property
    def signals_received(self) -> int:
        """Shutdown signals counted so far (repeats within the debounce count once)."""
        return self._runtime.escalation.signals_received

    def in_flight_by_service(self) -> dict[str, int]:
        """Units of work in flight per service, in start order; the body's own
        work under ``"body"``. Reads counters only, so a metrics exporter may
        call it from its own thread."""
        state = self._runtime.state
        counts = {svc.name: svc.node.count for svc in tuple(state.services)}
        counts["body"] = max(0, state.body.node.count - sum(counts.values()))
        return counts

    async def start(
        self,
        fn: Callable[..., Awaitable[Any]],
        *args: object,
        name: str | None = None,
        **options: object,
    ) -> Any:
        """Start a service and wait until it calls ``task_status.started(value)``.

        ``fn(token, *args, task_status=...)`` runs in the scope. Returns the value
        passed to ``started()``. A service still not started after
        ``start_timeout_warning`` seconds is named in a warning (log record
        field ``event="service_not_started"``). A checkpoint.

        Raises:
            TypeError: keyword options (bind them with ``functools.partial``),
                or a service that cannot take the token first and ``args``.
            RuntimeError: the shutdown has begun or the scope has exited.
            ServiceNotStartedError: the service returned, or the shutdown stopped
                it, before it called ``started()``.
            Exception: whatever the service raised before ``started()``.
        """
        runtime = self._runtime
        svc = self._add_service(fn, args, options, name, via="start")
        tg = runtime.tg
        assert tg is not None  # _add_service checked it
        if math.isfinite(runtime.start_warning):
            tg.start_soon(runtime.warn_unless_started, svc)
        try:
            return await tg.start(runtime.run_service, svc, fn, args, True)  # noqa: FBT003
        except RuntimeError as exc:
            if svc.outcome != "not started" or exc is svc.error:
                raise  # not anyio's "exited without calling started()"
        # Stopped by the shutdown: cancelled, or it saw its token and returned.
        by_shutdown = svc.cancel_scope.cancel_called or svc.token.stop_requested
        raise ServiceNotStartedError(svc.name, by_shutdown=by_shutdown)

    def start_soon(
        self,
        fn: Callable[..., Awaitable[Any]],
        *args: object,
        name: str | None = None,
        **options: object,
    ) -> None:
        """Start a service without waiting: ``fn(token, *args)``.

        Raises:
            TypeError: as for ``start()``.
            RuntimeError: the shutdown has begun or the scope has exited.
        """
        runtime = self._runtime
        svc = self._add_service(fn, args, options, name, via="start_soon")
        assert runtime.tg is not None  # _add_service checked it
        runtime.tg.start_soon(runtime.run_service, svc, fn, args, False, name=svc.name)  # noqa: FBT003

    def request_shutdown(self, reason: str = "shutdown requested") -> None:
        """Begin the shutdown. Idempotent, synchronous, and safe from any thread.

        Later calls (and calls after the scope ended) do nothing.
        """
        if not isinstance(reason, str):
            msg = f"reason must be a str, not {type(reason).__name__}"
            raise TypeError(msg)
        runtime = self._runtime
        if threading.get_ident() == runtime.loop_thread:
            runtime.escalation.trigger("request", reason)
        else:
            runtime.escalation.request_threadsafe(reason)

    def _add_service(
        self,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[object, ...],
        options: dict[str, object],
        name: str | None,
        *,
        via: str,
    ) -> Service:
        check_service(fn, args, options, via=via)
        if name is not None and not isinstance(name, str):
            msg = f"name must be a str or None, not {name!r}"
            raise TypeError(msg)
        runtime = self._runtime
        state = runtime.state
        if runtime.tg is None or runtime.report is not None:
            msg = "this graceful_scope is not running: start services inside its block"
            raise RuntimeError(msg)
        if state.trigger is not None:
            msg = (
                "cannot start a service: the shutdown has begun"
                f" ({state.reason}); check token.stop_requested before starting"
                " more work"
            )
            raise RuntimeError(msg)
        base = name or service_name(fn) or repr(fn)
        taken = {s.name for s in state.services}
        unique, n = base, 1
        while unique in taken:
            n += 1
            unique = f"{base}#{n}"
        return state.add_service(unique, started=via == "start_soon")


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
    dump_signal: int | None = None,
    start_timeout_warning: float = 5.0,
) -> AsyncIterator[ShutdownScope]:
    """Open a shutdown nursery: services run in it and stop in staged phases.

    The options are described in the README (section "Use"); in short:
    ``signals`` begin the shutdown (a second skips to CANCELLING, a third exits
    hard; ``()`` installs none); ``announce_delay``, ``drain_timeout`` and
    ``cancel_timeout`` are the phases' budgets; ``hard_exit`` runs the watchdog
    that ends the process when the budget is spent (``hard_exit_code``: its
    code); ``grace_period`` is the orchestrator's window, checked at entry;
    ``signal_debounce``: repeated signals within it count once;
    ``systemd_notify``: tell systemd (READY, STOPPING, STATUS, EXTEND_TIMEOUT,
    WATCHDOG) when ``NOTIFY_SOCKET`` is set; ``dump_signal`` (e.g.
    ``signal.SIGUSR1``): on it, write the phase, the work in flight, the task
    tree and every thread's stack to stderr and the log, stopping nothing;
    ``start_timeout_warning``: seconds after which a service that has not
    called ``task_status.started()`` is named in a warning (``math.inf``: never).

    Raises:
        TypeError, ValueError: an invalid option (the message states the rule).
        RuntimeError: signals requested outside the main thread, or already
            owned by an enclosing scope.
        ExceptionGroup: at exit, if the body or services raised.
    """
    plan = Plan.from_options(
        announce_delay=announce_delay,
        drain_timeout=drain_timeout,
        cancel_timeout=cancel_timeout,
        grace_period=grace_period,
        signal_debounce=signal_debounce,
        start_timeout_warning=start_timeout_warning,
    )
    sigs = validate_signals(signals)
    validate_flags(hard_exit=hard_exit, systemd_notify=systemd_notify)
    validate_exit_code(hard_exit_code)
    dump = validate_dump_signal(dump_signal, sigs)
    misfit = plan.misfit()
    if misfit is not None:
        warnings.warn(misfit, ShutdownPlanWarning, stacklevel=3)
    opened = open_runtime(
        plan=plan,
        signals=sigs,
        hard_exit=hard_exit,
        hard_exit_code=hard_exit_code,
        systemd_notify=systemd_notify,
        dump_signal=dump,
    )
    async with opened as runtime:
        yield ShutdownScope(runtime)
