"""The ``shutdown-scope`` command: a PID-1-safe launcher with zero-downtime reload.

It runs no event loop: a plain ``select`` over signals, notify datagrams and
the control socket, so it keeps working whatever the child does.
"""

from ._cli import main

__all__ = ["main"]
