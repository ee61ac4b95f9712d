"""The ``shutdown-scope`` command: a PID-1-safe launcher with zero-downtime reload.

It runs no event loop: a plain ``select`` over signals, notify datagrams and
the control socket, so it keeps working whatever the child does. It imports
neither anyio nor asyncio, and ``main`` catches signals before it imports the
rest: the time from exec to handlers installed is a bare interpreter's, nearly.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing itself costs milliseconds before the handlers
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """The ``shutdown-scope`` command; returns its exit code.

    As the command itself (``argv`` None), ``run`` does not return: once every
    child has exited and its own output is flushed, the launcher leaves with
    ``os._exit``, skipping the interpreter's teardown, which would delay its
    exit (and so a supervisor's restart) by milliseconds for nothing.
    """
    if argv is None and sys.argv[1:2] == ["run"]:
        code = _main(sys.argv[1:])
        from shutdown_scope._exit_now import exit_now

        exit_now(code)
    return _main(sys.argv[1:] if argv is None else argv)


def _main(argv: Sequence[str]) -> int:
    words = list(argv)
    if words[:1] == ["serve"]:  # the app server: none of the launcher's modules
        from shutdown_scope._serve_args import serve_main

        return serve_main(words)
    if words[:1] != ["run"]:
        from ._cli import main as command  # see the module doc

        return command(words)
    from ._signal_inbox import SignalInbox  # first, and alone

    with SignalInbox() as signals:
        from ._cli import main as command  # after the handlers

        return command(words, signals=signals)
