"""``shutdown-scope run`` and ``shutdown-scope reload``: arguments to a supervisor."""

from __future__ import annotations

import argparse
import ctypes
import logging
import math
import os
import socket
import sys
from collections.abc import Sequence
from contextlib import ExitStack

from shutdown_scope._serve_args import add_serve_parser
from shutdown_scope._version import __version__

from . import _values as values
from ._first_start import start_and_supervise
from ._notify import NOTIFY_ACCESS, Upstream, senders_known
from ._options import Options
from ._pid_file import PidFile, name_this_process, parse_pid, signal_launcher
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

_RUN_EPILOG = """\
signals: TERM, INT and QUIT are forwarded to the child's process group and begin
the stop; USR1, USR2, WINCH and ABRT are forwarded; HUP starts a zero-downtime reload
(unless rewritten). The exit code is the child's (128 + N if signal N ended it).

example:
  shutdown-scope run --listen 0.0.0.0:8000 --grace-period 25 -- python app.py
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shutdown-scope",
        description="Run a service safely as PID 1, with socket handover and "
        "zero-downtime reload.",
    )
    parser.add_argument(
        "--version", action="version", version=f"shutdown-scope {__version__}"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="run CMD under the launcher",
        usage="shutdown-scope run [options] -- CMD [ARGS...]",
        epilog=_RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "--listen",
        action="append",
        default=[],
        metavar="ADDR",
        help="bind HOST:PORT, [V6]:PORT, unix:PATH or unix:@NAME (abstract, Linux) "
        "once and pass it to every generation as LISTEN_FDS (repeatable; port 0 "
        "picks a free port)",
    )
    run.add_argument(
        "--backlog",
        type=values.backlog,
        default=socket.SOMAXCONN,
        metavar="N",
        help="listen backlog, 0 to 2147483647 (default: SOMAXCONN)",
    )
    run.add_argument(
        "--rewrite",
        action="append",
        default=[],
        type=values.rewrite,
        metavar="FROM:TO",
        help="forward signal FROM as TO (TERM:INT; TO=0 drops it; HUP:HUP forwards "
        "HUP instead of reloading); repeatable",
    )
    run.add_argument(
        "--grace-period",
        type=values.seconds,
        default=math.inf,
        metavar="S",
        help="after a stop signal, SIGKILL what still runs after S seconds "
        "(default: never)",
    )
    run.add_argument(
        "--ready-timeout",
        type=values.timeout,
        default=30.0,
        metavar="S",
        help="a reload fails if the successor has not sent READY=1 within S seconds "
        "(default 30)",
    )
    run.add_argument(
        "--workers",
        type=values.workers,
        metavar="N",
        help="run N worker processes per generation on the same sockets (auto or 0:"
        " one per CPU available); a worker that dies on its own is replaced",
    )
    run.add_argument(
        "--ready",
        type=values.ready_mode,
        default=values.ready_mode("notify"),
        metavar="MODE",
        help="when a generation is ready: notify (it sends READY=1, the default), "
        "accepting (it waits for connections on a handed socket, seen in /proc) "
        "or after:S (S seconds after its start)",
    )
    run.add_argument(
        "--debounce",
        type=values.interval,
        default=0.2,
        metavar="S",
        help="the same signal again within S seconds counts once (default 0.2)",
    )
    run.add_argument(
        "--notify-access",
        choices=NOTIFY_ACCESS,
        default="main",
        help="whose sd_notify messages count: the main process of each generation "
        "(main, the default, as systemd's NotifyAccess=main) or any process that "
        "reaches its NOTIFY_SOCKET (all)",
    )
    run.add_argument(
        "--control",
        metavar="PATH",
        help="unix socket for `shutdown-scope reload` (mode 0600: this uid and root)",
    )
    run.add_argument(
        "--control-group",
        type=values.group,
        metavar="GROUP",
        help="also let members of GROUP (name or gid) use --control (mode 0660)",
    )
    run.add_argument("--pid-file", metavar="PATH", help="write the launcher's pid here")
    run.add_argument(
        "--metrics-file",
        metavar="PATH",
        help="write reloads by outcome and the serving generation here, in the "
        "Prometheus text format, at start and after each reload (for "
        "node_exporter's textfile collector, name it NAME.prom)",
    )
    run.add_argument(
        "-q", "--quiet", action="store_true", help="log only warnings and errors"
    )
    run.add_argument("cmd", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    reload = commands.add_parser(
        "reload",
        help="ask a running launcher for a zero-downtime reload",
        description="With --control, wait for the reload and exit 0 if the new "
        "generation took over, 1 if not. With --pid or --pid-file, send SIGHUP.",
    )
    target = reload.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--control", metavar="PATH", help="the launcher's --control socket"
    )
    target.add_argument(
        "--pid", type=parse_pid, help="the launcher's pid (sends SIGHUP)"
    )
    target.add_argument("--pid-file", metavar="PATH", help="the launcher's --pid-file")
    reload.add_argument(
        "--timeout",
        type=values.wait,
        default=120.0,
        metavar="S",
        help="with --control, wait at most S seconds (default 120)",
    )
    dump = commands.add_parser(
        "dump",
        help="ask the serving generation for a diagnostic dump (SIGUSR1)",
        description="Through the launcher's --control socket, send SIGUSR1 to each "
        "process of the serving generation: a graceful_scope(dump_signal=SIGUSR1) "
        "(shutdown-scope serve sets it) writes its phase, in-flight work, tasks and "
        "threads to its stderr, and goes on. Exit 0 when sent, 1 if not.",
    )
    dump.add_argument(
        "--control", metavar="PATH", required=True, help="the launcher's --control"
    )
    dump.add_argument(
        "--timeout",
        type=values.wait,
        default=10.0,
        metavar="S",
        help="wait at most S seconds for the answer (default 10)",
    )
    add_serve_parser(commands)
    return parser


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
        return start_and_supervise(
            options,
            listeners,
            environ=environ,
            signals=signals,
            control=control,
            notify_upstream=None if upstream is None else upstream.send,
            metrics=metrics,
        )


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
    parser = _parser()
    args = parser.parse_args(words)
    twice = values.rewritten_twice(args.rewrite) if args.command == "run" else None
    if twice is not None:
        parser.error(f"--rewrite: {twice} is rewritten twice")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("shutdown-scope: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if getattr(args, "quiet", False) else logging.INFO)
    logger.propagate = False
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
