"""The first generation, started before the launcher has loaded its loop.

Starting a Python service is mostly the service's own imports (a hundred ms and
more). So the launcher starts the first generation as soon as its command line
is checked and its sockets are bound, and only then imports and builds what
supervises it (the loop, reloads, readiness probes, the control protocol): on a
machine with more than one core, that work overlaps the child's start instead
of delaying it. Every check that can refuse to start the child (the options,
the sockets, the control socket, the pid and metrics files) is still done first.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
from collections.abc import Callable, Sequence
from logging import ERROR, INFO

from . import _events as events
from ._children import Children, child_environ
from ._generation import Generation
from ._options import Options
from ._signal_inbox import SignalInbox
from ._sockets import Listener
from ._spawn import SpawnError

TYPE_CHECKING = False  # imported after the start (see the module doc)
if TYPE_CHECKING:
    from ._control import ControlServer
    from ._metrics_file import MetricsFile

__all__ = ["start_and_supervise"]

logger = logging.getLogger("shutdown_scope.launcher")


def start_and_supervise(
    options: Options,
    listeners: Sequence[Listener],
    *,
    environ: dict[str, str],
    signals: SignalInbox,
    control: ControlServer | None,
    notify_upstream: Callable[[str], None] | None,
    metrics: MetricsFile | None,
) -> int:
    """Start the first generation, then supervise it; the launcher's exit code."""
    relayed = notify_upstream is not None
    try:
        children = Children(
            options, listeners, environ=child_environ(environ, relayed=relayed)
        )
    except OSError as error:  # its runtime directory (for the notify sockets)
        logger.error("%s", error.strerror or error)  # noqa: TRY400
        return 1
    first = _start_first(children)
    if isinstance(first, int):
        return first
    children.current = first
    try:
        from ._supervisor import Supervisor  # while the child starts

        supervisor = Supervisor(
            options,
            children,
            signals=signals,
            control=control,
            notify_upstream=notify_upstream,
            metrics=metrics,
        )
        supervisor.register_control()
    except OSError as error:
        _abandon(children, first)  # no child may outlive a launcher that failed
        logger.error("%s", error.strerror or error)  # noqa: TRY400
        return 1
    except BaseException:
        _abandon(children, first)
        raise
    return supervisor.run()


def _start_first(children: Children) -> Generation | int:
    """Start the first generation; the exit code instead if it cannot start."""
    try:
        first = children.start_generation()
    except SpawnError as error:
        children.close()
        why = error.strerror or str(error)
        events.log(ERROR, "generation_failed", why, generation=1)
        return 126 if error.errno in {errno.EACCES, errno.ENOEXEC} else 127
    except OSError as error:
        children.close()
        why = f"cannot start the command: {error}"
        events.log(ERROR, "generation_failed", why, generation=1)
        return 1
    events.log(INFO, "generation_spawned", f"{first} started", first)
    return first


def _abandon(children: Children, first: Generation) -> None:
    """Kill and reap ``first``'s process groups; close their notify sockets."""
    for worker in first.workers:
        worker.signal_group(signal.SIGKILL)
    for worker in first.workers:
        os.waitpid(worker.pid, 0)
    children.close()  # first is children.current: its sockets are closed too
