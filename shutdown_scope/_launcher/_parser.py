"""The ``shutdown-scope`` command line: its parser (the docs' option tables too)."""

from __future__ import annotations

import argparse
import math
import os
import socket
import sys

from shutdown_scope._serve_args import add_serve_parser
from shutdown_scope._version import __version__

from . import _values as values
from ._log_output import LOG_FORMATS
from ._notify import NOTIFY_ACCESS
from ._pid_file import parse_pid

__all__ = ["command_parser"]

_RUN_EPILOG = """\
signals: TERM, INT and QUIT are forwarded to the child's process group and begin
the stop; USR1, USR2, WINCH and ABRT are forwarded; HUP starts a zero-downtime reload
(unless rewritten). The exit code is the child's (128 + N if signal N ended it).

example:
  shutdown-scope run --listen 0.0.0.0:8000 --grace-period 25 -- python app.py
"""


def _help_width() -> int:
    """``HelpFormatter``'s default width, without importing ``shutil``.

    argparse makes a formatter for each argument added and, given no width,
    imports shutil (with bz2, lzma, fnmatch: over a millisecond) to read the
    terminal's: this is ``shutil.get_terminal_size().columns - 2``, as it does.
    """
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    stdout = sys.__stdout__
    if columns <= 0 and stdout is not None:
        try:
            columns = os.get_terminal_size(stdout.fileno()).columns
        except (ValueError, OSError):
            columns = 0
    return (columns or 80) - 2


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose formatters are given the width (see above).

    Subparsers are of the class of their parent: this one, too.
    """

    def _get_formatter(self) -> argparse.HelpFormatter:
        # Each of argparse's formatter classes takes a width; its stub says prog only.
        width = _help_width()
        return self.formatter_class(prog=self.prog, width=width)  # type: ignore[call-arg]


def command_parser() -> argparse.ArgumentParser:
    """The parser of the whole command: run, reload, dump and serve."""
    parser: argparse.ArgumentParser = _Parser(
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
    run.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="text (default) or json: a JSON object a line, with an `event` field",
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
