"""``shutdown-scope serve MODULE:ATTRIBUTE``: an ASGI app, served under graceful_scope.

``graceful_scope`` with the command line's budgets, and in it one service, the
server integration (``shutdown_scope.hypercorn.serve`` or
``shutdown_scope.uvicorn.serve``). The sockets a launcher or systemd hands over
(``LISTEN_FDS`` for this process) are served instead of ``--bind``, and the
scope sends ``READY=1`` when the server accepts (under ``NOTIFY_SOCKET``), so
the launcher's reload works with no code in the app.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.util
import logging
import os
import signal
import socket
import stat
import sys
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TextIO

from . import systemd
from ._early_stop import EarlyStop
from ._phases import Plan
from ._report import ShutdownReport
from ._run import run
from ._scope import graceful_scope
from ._serve_app import FAILED, USAGE, ServeError, load_app
from ._serve_args import DEFAULT_BIND

if sys.version_info < (3, 11):  # pragma: no cover -- only on 3.10
    from exceptiongroup import BaseExceptionGroup

__all__ = ["serve_command"]

logger = logging.getLogger("shutdown_scope.serve")

_PREFIX = "shutdown-scope serve"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Server:
    """A server integration's ``serve`` with its app and configuration bound."""

    name: str
    serve: Callable[..., Awaitable[Any]]  # serve(token, *args, task_status=...)
    args: tuple[object, ...]


def _require(package: str, install: str) -> None:
    if importlib.util.find_spec(package) is None:
        msg = f"{package} is not installed: pip install {install}"
        raise ServeError(msg, USAGE)


def _handed_over() -> list[str] | None:
    """``fd://N`` for each socket of ``LISTEN_FDS`` for this process, else None."""
    try:
        fds = systemd.listen_fds()
    except (OSError, ValueError) as error:
        text = error.strerror if isinstance(error, OSError) else None
        raise ServeError(text or str(error), FAILED) from None
    return [f"fd://{fd}" for fd in fds] or None


def _say_handed_over(binds: list[str], ignored: list[str] | None) -> None:
    logger.info(
        "%s: serving the socket(s) handed over (LISTEN_FDS): %s",
        _PREFIX,
        ", ".join(binds),
    )
    if ignored:
        logger.warning(
            "%s: --bind %s ignored: serving the sockets handed over",
            _PREFIX,
            " --bind ".join(ignored),
        )


def _check_fd(bind: str, *, handed_over: bool) -> None:
    """An ``fd://N`` must be an open stream socket.

    A bad ``--bind`` is the command line's fault (exit 2); a bad socket handed
    over, the launcher's (exit 1).
    """
    fd = int(bind[len("fd://") :])
    where, code = ("LISTEN_FDS", FAILED) if handed_over else (f"--bind {bind}", USAGE)
    try:
        mode = os.fstat(fd).st_mode
    except OSError as error:
        msg = f"{where}: fd {fd} is not open ({error.strerror})"
        raise ServeError(msg, code) from None
    if not stat.S_ISSOCK(mode):
        msg = f"{where}: fd {fd} is not a socket"
        raise ServeError(msg, code)
    with socket.socket(fileno=os.dup(fd)) as sock:
        if sock.type != socket.SOCK_STREAM:
            msg = f"{where}: fd {fd} is not a stream (TCP or unix) socket"
            raise ServeError(msg, code)


def _hypercorn(args: argparse.Namespace, app: Any, binds: list[str]) -> _Server:
    _require("hypercorn", "'shutdown-scope[hypercorn]'")
    from ._hypercorn_compat import Config
    from .hypercorn import serve

    config = Config()
    config.bind = binds
    config.loglevel = args.log_level.upper()
    # A logger, not hypercorn's default "-": no handler of its own, so each line
    # is printed once, by the root handler, in the command's format.
    config.errorlog = logging.getLogger("hypercorn.error")
    bound = functools.partial(serve, readiness_path=args.readiness_path)
    return _Server(name="hypercorn", serve=bound, args=(app, config))


def _uvicorn_config(bind: str) -> dict[str, Any]:
    if bind.startswith("fd://"):
        return {"fd": int(bind[len("fd://") :])}
    if bind.startswith("unix:"):
        return {"uds": bind[len("unix:") :]}
    host, _, port = bind.rpartition(":")
    return {"host": host.strip("[]"), "port": int(port)}


def _uvicorn(args: argparse.Namespace, app: Any, binds: list[str]) -> _Server:
    if args.backend != "asyncio":
        msg = (
            "--server uvicorn runs on asyncio only: use --backend asyncio, or hypercorn"
        )
        raise ServeError(msg, USAGE)
    if len(binds) > 1:
        msg = (
            f"--server uvicorn serves one address, not {len(binds)} "
            f"({', '.join(binds)}); serve several with --server hypercorn"
        )
        raise ServeError(msg, USAGE)
    _require("uvicorn", "uvicorn")
    try:
        # Imported by name: the integration is an optional part of the package.
        integration = importlib.import_module("shutdown_scope.uvicorn")
    except ModuleNotFoundError as error:
        if error.name != "shutdown_scope.uvicorn":
            raise
        msg = "this shutdown_scope has no uvicorn integration (shutdown_scope.uvicorn)"
        raise ServeError(msg, USAGE) from None
    import uvicorn

    config = uvicorn.Config(app, log_level=args.log_level, **_uvicorn_config(binds[0]))
    bound = functools.partial(integration.serve, readiness_path=args.readiness_path)
    return _Server(name="uvicorn", serve=bound, args=(app, config))


def _prepare(args: argparse.Namespace) -> tuple[Plan, _Server]:
    """Check the options, load the app, configure the server.

    Raises:
        ServeError: something cannot be served (the message says what).
    """
    try:
        plan = Plan.from_options(
            announce_delay=args.announce_delay,
            drain_timeout=args.drain_timeout,
            cancel_timeout=args.cancel_timeout,
            grace_period=args.grace_period,
            signal_debounce=0.2,
        )
    except ValueError as error:
        raise ServeError(str(error), USAGE) from None
    if args.backend == "trio":
        _require("trio", "'shutdown-scope[trio]'")
    handed_over = _handed_over()
    binds = handed_over or args.bind or [DEFAULT_BIND]
    for bind in binds:
        if bind.startswith("fd://"):
            _check_fd(bind, handed_over=bool(handed_over))
    if handed_over:
        _say_handed_over(handed_over, args.bind)
    app = load_app(args.app, factory=args.factory, app_dir=args.app_dir)
    make = _uvicorn if args.server == "uvicorn" else _hypercorn
    return plan, make(args, app, binds)


class _StartFailure(logging.Filter):
    """Once the server has failed to start, the scope's account of its own
    shutdown is noise: the failure is said in one line (DEBUG keeps it all)."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def filter(self, record: logging.LogRecord) -> bool:
        """Drop the scope's records after a failed start."""
        return not (
            self.failed
            and record.name == "shutdown_scope"
            and record.levelno > logging.DEBUG
        )


async def _serve(
    plan: Plan, server: _Server, start: _StartFailure, early: EarlyStop
) -> ShutdownReport:
    async with graceful_scope(
        announce_delay=plan.announce_delay,
        drain_timeout=plan.drain_timeout,
        cancel_timeout=plan.cancel_timeout,
        grace_period=plan.grace_period,
        # `shutdown-scope dump` (and a SIGUSR1 the launcher forwards) asks for
        # a dump; without a handler, SIGUSR1 would end the server.
        dump_signal=signal.SIGUSR1,
    ) as scope:
        # The scope's handlers are in place: a signal from now on is its own.
        why = early.reason()
        if why is not None:
            scope.request_shutdown(why)  # the server is never started
        else:
            try:
                urls = await scope.start(server.serve, *server.args, name="http")
            except Exception:
                start.failed = True
                raise
            for url in urls if isinstance(urls, list) else [urls]:
                logger.info("%s: listening on %s (%s)", _PREFIX, url, server.name)
    # Returning here, with the server started, is what sends READY=1.
    return scope.report


def _show_warning(  # noqa: PLR0917 -- the signature of warnings.showwarning
    message: Warning | str,
    category: type[Warning],
    filename: str,  # noqa: ARG001 -- the signature of warnings.showwarning
    lineno: int,  # noqa: ARG001
    file: TextIO | None = None,  # noqa: ARG001
    line: str | None = None,  # noqa: ARG001
) -> None:
    logger.warning("%s: %s: %s", _PREFIX, category.__name__, message)


def _configure_logging(level: str) -> _StartFailure:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    start = _StartFailure()
    handler.addFilter(start)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level.upper())
    warnings.showwarning = _show_warning  # one line, as every other message
    return start


def _first_line(error: BaseException) -> str:
    """What a failure says, without its traceback (DEBUG has it)."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    if isinstance(error, OSError) and error.strerror:
        return error.strerror  # the integrations' messages name the address
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def serve_command(args: argparse.Namespace, early: EarlyStop | None = None) -> int:
    """Run ``shutdown-scope serve``; return its exit code.

    ``early``: the stop signals caught since the command's start.
    """
    early = early or EarlyStop()
    start = _configure_logging(args.log_level)
    try:
        plan, server = _prepare(args)
    except ServeError as error:
        print(f"{_PREFIX}: error: {error}", file=sys.stderr)  # noqa: T201
        return error.code
    try:
        run(_serve, plan, server, start, early, backend=args.backend)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else FAILED
    except Exception as error:
        logger.debug("%s: the server failed:", _PREFIX, exc_info=error)
        what = "cannot start the server" if start.failed else "the server failed"
        print(f"{_PREFIX}: error: {what}: {_first_line(error)}", file=sys.stderr)  # noqa: T201
        return FAILED
    return FAILED  # run() always raises SystemExit
