"""``shutdown-scope serve``: its command line.

Only the standard library here: the launcher builds every subcommand's parser,
and the launcher imports no event loop. What ``serve`` runs is in
``_serve_command``, imported once ``serve`` is chosen.
"""

from __future__ import annotations

import argparse
import math
import re

TYPE_CHECKING = False  # typing costs milliseconds at the launcher's start
if TYPE_CHECKING:
    from typing import Final

__all__ = ["DEFAULT_BIND", "add_serve_parser", "app_spec", "bind_address", "seconds"]

DEFAULT_BIND: Final = "127.0.0.1:8000"
SERVERS: Final = ("hypercorn", "uvicorn")
BACKENDS: Final = ("asyncio", "trio")
LOG_LEVELS: Final = ("critical", "error", "warning", "info", "debug")

_DOTTED: Final = re.compile(r"[^\W\d]\w*(\.[^\W\d]\w*)*")
_BIND_FORMS: Final = "HOST:PORT, [V6]:PORT, unix:PATH or fd://N"
_MAX_PORT: Final = 65535

_EPILOG = """\
APP is MODULE:ATTRIBUTE, as in `app:app` or `mysite.asgi:application`: an ASGI
application, or with --factory a function that returns one. MODULE is imported
from --app-dir (default: the current directory).

Under `shutdown-scope run --listen ADDR` or systemd socket activation (LISTEN_FDS
for this process), the sockets handed over are served and --bind is ignored. With
NOTIFY_SOCKET set, READY=1 is sent once the server accepts.

exit code: 0 after a clean stop, 1 when work was cancelled or the server could not
start, 2 for a bad command line (APP not found or not an ASGI app, a bad --bind),
128 + N when the stop budget ran out after signal N.

examples:
  shutdown-scope serve app:app --bind 0.0.0.0:8000 --readiness-path /readyz
  shutdown-scope run --listen 0.0.0.0:8000 -- shutdown-scope serve app:app
"""


def seconds(text: str) -> float:
    """A number of seconds >= 0; ``inf`` for never."""
    try:
        value = float(text)
    except ValueError:
        msg = f"{text!r} is not a number of seconds"
        raise argparse.ArgumentTypeError(msg) from None
    if math.isnan(value) or value < 0:
        msg = f"{text!r}: seconds must be >= 0 (inf for never)"
        raise argparse.ArgumentTypeError(msg)
    return value


def bind_address(text: str) -> str:
    """Check the form of a ``--bind`` address (not whether it can be bound)."""
    if text.startswith("unix:"):
        if len(text) == len("unix:"):
            msg = f"{text!r}: a unix socket needs a path, as in unix:/run/app.sock"
            raise argparse.ArgumentTypeError(msg)
        return text
    if text.startswith("fd://"):
        number = text[len("fd://") :]
        if not (number.isascii() and number.isdigit()):
            msg = f"{text!r}: fd://N takes a file descriptor number, as in fd://3"
            raise argparse.ArgumentTypeError(msg)
        return text
    host, sep, port = text.rpartition(":")
    if (
        not sep
        or not (port.isascii() and port.isdigit())
        or int(port) > _MAX_PORT
        or not host
    ):
        msg = (
            f"{text!r} is not an address: expected {_BIND_FORMS}, as in "
            "127.0.0.1:8000, 0.0.0.0:8000 (every interface) or [::1]:8000"
        )
        raise argparse.ArgumentTypeError(msg)
    bracketed = host.startswith("[") and host.endswith("]")
    if (":" in host and not bracketed) or host == "[]" or "]" in host[:-1]:
        msg = f"{text!r}: write an IPv6 host in brackets, as in [::1]:8000"
        raise argparse.ArgumentTypeError(msg)
    return text


def app_spec(text: str) -> str:
    """Check the form ``MODULE:ATTRIBUTE`` (not whether it imports)."""
    module, sep, attribute = text.partition(":")
    if module.endswith(".py") or "/" in module:
        msg = (
            f"{text!r}: name the module, not its file: --app-dir DIR "
            "MODULE:ATTRIBUTE, as in --app-dir src app:app"
        )
        raise argparse.ArgumentTypeError(msg)
    if not sep or not _DOTTED.fullmatch(module) or not _DOTTED.fullmatch(attribute):
        msg = (
            f"{text!r}: expected MODULE:ATTRIBUTE, as in app:app or "
            "mysite.asgi:application"
        )
        raise argparse.ArgumentTypeError(msg)
    return text


def _path(text: str) -> str:
    if not text.startswith("/"):
        msg = f"{text!r}: a path starts with /, as in /readyz"
        raise argparse.ArgumentTypeError(msg)
    return text


def add_serve_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Add ``serve`` to the launcher's subcommands."""
    serve = commands.add_parser(
        "serve",
        help="serve an ASGI app (MODULE:ATTRIBUTE) with graceful shutdown",
        description="Serve an ASGI application under graceful_scope: SIGTERM "
        "stops it without losing a request (announce, drain, cancel).",
        usage="shutdown-scope serve [options] APP",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("app", type=app_spec, metavar="APP", help="MODULE:ATTRIBUTE")
    serve.add_argument(
        "--server",
        choices=SERVERS,
        default="hypercorn",
        help="the HTTP server (default hypercorn)",
    )
    serve.add_argument(
        "--backend",
        choices=BACKENDS,
        default="asyncio",
        help="the event loop (default asyncio; trio with hypercorn only)",
    )
    serve.add_argument(
        "--bind",
        action="append",
        type=bind_address,
        metavar="ADDR",
        help=f"{_BIND_FORMS} (repeatable; default {DEFAULT_BIND}; port 0 picks "
        "a free port); ignored when sockets are handed over (LISTEN_FDS)",
    )
    serve.add_argument(
        "--readiness-path",
        type=_path,
        metavar="PATH",
        help="answer 200 here while ready, 503 once the shutdown has begun "
        "(default: no such endpoint)",
    )
    serve.add_argument(
        "--announce-delay",
        type=seconds,
        default=0.0,
        metavar="S",
        help="after SIGTERM, keep serving (readiness 503, Connection: close) "
        "for S seconds before the listeners close (default 0)",
    )
    serve.add_argument(
        "--drain-timeout",
        type=seconds,
        default=20.0,
        metavar="S",
        help="then let requests in flight finish for at most S seconds (default 20)",
    )
    serve.add_argument(
        "--cancel-timeout",
        type=seconds,
        default=5.0,
        metavar="S",
        help="then cancel what remains and give it S seconds to clean up "
        "(default 5); after that the process exits hard",
    )
    serve.add_argument(
        "--grace-period",
        type=seconds,
        metavar="S",
        help="the orchestrator's window before SIGKILL: warn at start if the "
        "three budgets above do not fit in it",
    )
    serve.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="info",
        help="default info",
    )
    serve.add_argument(
        "--factory",
        action="store_true",
        help="APP is a function that takes no arguments and returns the app",
    )
    serve.add_argument(
        "--app-dir",
        default=".",
        metavar="DIR",
        help="import MODULE from DIR (default: the current directory)",
    )


def serve_main(words: list[str]) -> int:
    """``shutdown-scope serve ...`` without loading the launcher's modules.

    ``words`` starts with ``serve``. The server starts as fast as it can: neither
    the supervisor nor the control socket code is imported for it.
    """
    from shutdown_scope._early_stop import EarlyStop

    early = EarlyStop()  # before the app's import: a SIGTERM then is not lost
    parser = argparse.ArgumentParser(prog="shutdown-scope")
    add_serve_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(words)
    from shutdown_scope._serve_command import serve_command  # the event loop

    return serve_command(args, early=early)
