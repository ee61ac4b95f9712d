"""run(): run a main under anyio and exit with the report's code."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NoReturn

import anyio

from ._exit_now import exit_now
from ._extras import missing_extra
from ._misuse import not_a_coroutine
from ._report import ShutdownReport, report_sink
from ._report_file import ReportFile

__all__ = ["run"]


def run(
    main: Callable[..., Awaitable[object]],
    *args: object,
    backend: str = "asyncio",
    backend_options: Mapping[str, Any] | None = None,
    fast_exit: bool = False,
) -> NoReturn:
    """Run ``main(*args)`` under anyio; exit with the report's code.

    The code is that of the outermost ``graceful_scope``'s report: 0 after a
    clean graceful stop, 1 when work was lost or something failed. (A hard exit
    from the watchdog never gets here: it exits with 128 + the signal number.)

    If ``main`` returns a ``ShutdownReport``, that report decides. If no scope
    ran, the exit code is 0. Exceptions from ``main`` propagate as usual.

    With ``SHUTDOWN_SCOPE_REPORT_FILE`` set to a path, the deciding report is
    written there as JSON (``as_dict()``) at the end, also when ``main`` raised.

    Args:
        main: the async function to run.
        *args: its positional arguments.
        backend: ``"asyncio"`` or ``"trio"``.
        backend_options: passed to ``anyio.run``.
        fast_exit: once ``main`` has returned, run the ``atexit`` handlers,
            flush the ``logging`` handlers and stdio, then end the process with
            ``os._exit(code)``, skipping the interpreter's own teardown (tens
            of milliseconds after a server ran: the exit a supervisor waits
            for comes that much sooner). Not done when ``main`` raised. What it
            skips: waiting for non-daemon threads still running, ``__del__``
            and ``finally`` of objects and generators alive at the end, and
            buffers of files left open (close them, or flush them, in ``main``).

    Raises:
        TypeError: ``main`` is a coroutine (``run(main())``: pass the function)
            or not callable; ``fast_exit`` is not a bool.
        SystemExit: always, with the exit code.
        ModuleNotFoundError: ``backend="trio"`` without trio installed (the
            message names the extra: ``shutdown-scope[trio]``).
    """
    not_a_coroutine(main, call="run()", right="run(main), not run(main())")
    if not callable(main):
        msg = f"run() takes an async function, not {main!r}"
        raise TypeError(msg)
    if not isinstance(fast_exit, bool):
        msg = f"fast_exit must be True or False, not {fast_exit!r}"
        raise TypeError(msg)
    if backend not in {"asyncio", "trio"}:
        msg = f"backend must be 'asyncio' or 'trio', not {backend!r}"
        raise ValueError(msg)
    if backend == "trio":
        try:
            import trio  # noqa: F401 -- anyio would, with a less helpful error
        except ModuleNotFoundError as error:
            raise missing_extra(error, "trio") from error
    report_file = ReportFile.take(os.environ)
    reports: list[ShutdownReport] = []
    token = report_sink.set(reports)
    result: object = None
    try:
        result = anyio.run(
            main, *args, backend=backend, backend_options=dict(backend_options or {})
        )
    finally:
        report_sink.reset(token)
        report = result if isinstance(result, ShutdownReport) else None
        if report is None and reports:
            report = reports[-1]
        report_file.write(report)
    code = 0 if report is None else report.exit_code
    if fast_exit:
        exit_now(code)
    raise SystemExit(code)
