"""Exceptions. Each leaf also subclasses the builtin a user would catch."""

from __future__ import annotations

__all__ = ["ServiceNotStartedError", "ShutdownScopeError"]


class ShutdownScopeError(Exception):
    """Base class of every error this library raises on its own."""


class ServiceNotStartedError(ShutdownScopeError, RuntimeError):
    """``scope.start()`` returned without the service calling ``started()``.

    ``by_shutdown`` is True when the shutdown stopped the service while it was
    still starting; the scope then treats it as part of a normal stop, not as an
    error, if the body lets it propagate.
    """

    def __init__(self, name: str, *, by_shutdown: bool) -> None:
        self.name = name
        self.by_shutdown = by_shutdown
        if by_shutdown:
            why = "the shutdown stopped it before it called task_status.started()"
        else:
            why = (
                "it returned without calling task_status.started(); a service"
                " started with scope.start() must call it once it is ready"
                " (or use scope.start_soon())"
            )
        super().__init__(f"service {name!r} did not start: {why}")
