"""The ``shutdown-scope`` command: a PID-1-safe launcher with zero-downtime reload.

Stdlib only: it never imports anyio or an integration, so it starts fast and
keeps working whatever the child does.
"""

from ._cli import main

__all__ = ["main"]
