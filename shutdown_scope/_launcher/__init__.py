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
    """The ``shutdown-scope`` command; returns its exit code."""
    words = list(sys.argv[1:] if argv is None else argv)
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
