"""``shutdown-scope run`` and ``shutdown-scope reload``: arguments to a supervisor."""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from logging import INFO

from . import _events as events
from . import _values as values
from ._first_start import start_and_supervise
from ._log_output import attach
from ._notify import Upstream, senders_known
from ._options import Options
from ._parser import command_parser
from ._pid_file import PidFile, name_this_process, signal_launcher
from ._signal_inbox import SignalInbox
from ._sockets import FIRST_FD, Listener, adopt_inherited, bind

TYPE_CHECKING = False  # these two are imported when used: not on the way to the start
if TYPE_CHECKING:
    from ._control import ControlServer
    from ._metrics_file import MetricsFile

__all__ = ["main"]

logger = logging.getLogger("shutdown_scope.launcher")

_PR_SET_CHILD_SUBREAPER = 36
# Exit code for the launcher's own errors (bad address, port in use, ...).
_LAUNCHER_ERROR = 1


def _become_subreaper() -> None:
    """Orphans of the child are reparented to us (and reaped), not to PID 1."""
    if os.getpid() == 1 or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)  # our own symbols, libc's among them
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        logger.warning(
            "cannot become a child subreaper: %s", os.strerror(ctypes.get_errno())
        )


def _close_all(listeners: list[Listener]) -> None:
    for listener in listeners:
        listener.sock.close()


def _prepare(
    args: argparse.Namespace,
    environ: dict[str, str],
    stack: ExitStack,
    signals: SignalInbox,
) -> tuple[list[Listener], ControlServer | None]:
    """Sockets, control socket, pid file; each undone by ``stack``.

    Raises:
        OSError, ValueError: one of them cannot be set up (the message says which).
    """
    listeners = adopt_inherited(environ, opened_here=signals.fds)
    stack.callback(_close_all, listeners)
    for text in args.listen:
        listener = bind(text, backlog=args.backlog)
        listeners.append(listener)
        if listener.bound_path is not None:
            # Unless a successor has bound a new socket file there meanwhile.
            stack.callback(listener.bound_path.unlink_if_ours)
    control = None
    if args.control:
        from ._control import ControlServer

        control = ControlServer(args.control, group=args.control_group)
        stack.callback(control.close)
    if args.pid_file:
        stack.callback(PidFile(args.pid_file).release)
    return listeners, control


def _upstream(environ: dict[str, str], stack: ExitStack) -> Upstream | None:
    """Relay to the launcher's own supervisor (systemd Type=notify), if any."""
    value = environ.get("NOTIFY_SOCKET")
    if not value:
        return None
    try:
        upstream = Upstream(value)
    except ValueError as error:
        logger.warning("cannot notify the launcher's supervisor: %s", error)
        return None
    stack.callback(upstream.close)
    return upstream


def _metrics_file(path: str | None) -> MetricsFile | None:
    """The ``--metrics-file``, written once now: a bad path fails at start."""
    if path is None:
        return None
    from ._metrics_file import MetricsFile

    metrics = MetricsFile(path)
    try:
        metrics.write()
    except OSError as error:
        why = f"cannot write --metrics-file {path}: {error.strerror or error}"
        raise OSError(error.errno, why) from error
    return metrics


def _run(args: argparse.Namespace, command: list[str], signals: SignalInbox) -> int:
    if not command:
        logger.error("no command: shutdown-scope run [options] -- CMD [ARGS...]")
        return 2
    if args.control_group is not None and not args.control:
        logger.error("--control-group needs --control PATH")
        return 2
    environ = dict(os.environ)
    with ExitStack() as stack:
        try:
            listeners, control = _prepare(args, environ, stack, signals)
        except (OSError, ValueError) as error:
            text = error.strerror if isinstance(error, OSError) else None
            logger.error("%s", text or error)  # noqa: TRY400 -- a clear line, no traceback
            return _LAUNCHER_ERROR
        if args.ready.kind == "accepting" and not listeners:
            logger.error(
                "--ready accepting needs a socket to watch: add --listen ADDR"
                " (or run the launcher socket-activated)"
            )
            return 2
        for index, listener in enumerate(listeners):
            logger.info(
                "listening on %s (fd %d in the child)",
                listener.address,
                FIRST_FD + index,
                extra={
                    "event": "listening",
                    "address": str(listener.address),
                    "fd": FIRST_FD + index,
                },
            )
        _become_subreaper()
        name_this_process()  # what `reload --pid` checks
        options = Options(
            command=command,
            rewrite=dict(args.rewrite),
            grace_period=args.grace_period,
            ready_timeout=args.ready_timeout,
            debounce=args.debounce,
            notify_access=args.notify_access,
            ready=args.ready,
            workers=args.workers,
        )
        if args.notify_access == "main" and not senders_known():
            logger.warning(
                "this system does not tell notify senders apart:"
                " --notify-access main acts as all"
            )
        upstream = _upstream(environ, stack)
        try:
            metrics = _metrics_file(args.metrics_file)
        except OSError as error:
            logger.error("%s", error.strerror or error)  # noqa: TRY400
            return _LAUNCHER_ERROR
        pid = os.getpid()
        text = f"launcher started as pid {pid}"  # the command: in JSON
        events.log(INFO, "started", text, pid=pid, command=options.command)
        code = start_and_supervise(
            options,
            listeners,
            environ=environ,
            signals=signals,
            control=control,
            notify_upstream=None if upstream is None else upstream.send,
            metrics=metrics,
        )
        events.log(INFO, "exited", f"exit code {code}", exit_code=code)
        return code


def _reload(args: argparse.Namespace) -> int:
    if args.control:
        from ._control import ask_reload

        request = "dump" if args.command == "dump" else "reload"
        try:
            ok, text = ask_reload(args.control, timeout=args.timeout, request=request)
        except OSError as error:
            logger.error("%s", error.strerror or error)  # noqa: TRY400
            return _LAUNCHER_ERROR
        (logger.info if ok else logger.error)("%s", text)
        return 0 if ok else _LAUNCHER_ERROR
    try:
        pid = signal_launcher(pid=args.pid, pid_file=args.pid_file)
    except OSError as error:
        logger.error("%s", error.strerror or error)  # noqa: TRY400
        return _LAUNCHER_ERROR
    logger.info("SIGHUP sent to pid %d", pid)
    return 0


def main(
    argv: Sequence[str] | None = None, *, signals: SignalInbox | None = None
) -> int:
    """The ``shutdown-scope`` command; returns its exit code.

    Args:
        argv: the arguments; ``sys.argv[1:]`` by default.
        signals: for ``run``, the inbox opened first thing (see ``_launcher.main``);
            one is opened here without it.
    """
    words = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in words and words[:1] == ["run"]:  # the rest is the command, verbatim
        split = words.index("--")
        words, command = words[:split], words[split + 1 :]
    parser = command_parser()
    args = parser.parse_args(words)
    twice = values.rewritten_twice(args.rewrite) if args.command == "run" else None
    if twice is not None:
        parser.error(f"--rewrite: {twice} is rewritten twice")
    quiet = getattr(args, "quiet", False)
    handler = attach(logger, getattr(args, "log_format", "text"), quiet=quiet)
    try:
        if args.command == "serve":  # imports the event loop: only when chosen
            from shutdown_scope._serve_command import serve_command

            return serve_command(args)
        if args.command != "run":
            return _reload(args)
        if signals is None:
            with SignalInbox() as own:
                return _run(args, command or list(args.cmd), own)
        return _run(args, command or list(args.cmd), signals)
    finally:
        logger.removeHandler(handler)
        handler.close()
