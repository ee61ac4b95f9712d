"""systemd: notifications (``sd_notify``) and socket activation, without libsystemd.

A ``graceful_scope`` tells systemd about itself when ``NOTIFY_SOCKET`` is set
(``Type=notify`` services): ``READY=1`` once its body has returned with the
services started, ``STOPPING=1`` and ``STATUS=`` lines through the shutdown,
``EXTEND_TIMEOUT_USEC=`` while it drains, ``WATCHDOG=1`` pings (see its
``systemd_notify`` option). A body that runs until the shutdown never returns,
so it says when it is ready itself::

    from shutdown_scope import systemd

    async with graceful_scope() as scope:
        systemd.notify("STATUS=warming cache")
        await warm_cache()
        systemd.notify("READY=1")
        await serve_until_stopped(scope.token)

Socket activation (a ``.socket`` unit, or ``systemd-socket-activate``): systemd
binds the listening sockets and passes them as fds 3, 4, ...;
``listen_fds()`` returns them. Serve them with ``shutdown_scope.tcp``::

    sockets = [socket.socket(fileno=fd) for fd in systemd.listen_fds()]
    server = functools.partial(serve_tcp, sockets=sockets)
    async with graceful_scope() as scope:
        await scope.start(server, handle, name="tcp")

or with hypercorn (``shutdown_scope.hypercorn.serve``)::

    config.bind = [f"fd://{fd}" for fd in systemd.listen_fds()]

The sockets stay open across a restart of the service (systemd keeps them), so
connections that arrive meanwhile wait in the accept queue instead of being
refused.
"""

from __future__ import annotations

import os

from ._sd_protocol import send
from ._socket_activation import LISTEN_VARIABLES, SD_LISTEN_FDS_START, passed_fds

__all__ = ["SD_LISTEN_FDS_START", "listen_fds", "listen_fds_with_names", "notify"]


def notify(state: str) -> bool:
    r"""Tell the service manager (``NOTIFY_SOCKET``) about the service.

    ``state`` is one or more ``KEY=VALUE`` lines (``man sd_notify``)::

        notify("READY=1")  # up: a Type=notify unit is started
        notify("STATUS=warming cache")  # shown by systemctl status
        notify("READY=1\nSTATUS=serving on :8000")

    Not a checkpoint; it does not block unless the manager stops reading.
    Inside a ``graceful_scope``, which takes ``NOTIFY_SOCKET`` out of
    ``os.environ`` so that child processes do not inherit it, it still finds it.

    Returns:
        True when sent; False when ``NOTIFY_SOCKET`` is unset or empty (not
        under systemd, or a unit that does not listen): a no-op.

    Raises:
        TypeError, ValueError: ``state`` is not lines of ``KEY=VALUE`` (KEY in
            capitals), or ``NOTIFY_SOCKET`` is neither an absolute path nor an
            abstract name ``@name``.
        OSError: it could not be sent; the message names the socket and the
            errno is kept (``FileNotFoundError`` when the socket is gone).
    """
    return send(state, os.environ)


def listen_fds(*, unset_environment: bool = True) -> list[int]:
    """The fds systemd passed by socket activation: ``[3, 4, ...]`` or ``[]``.

    See ``listen_fds_with_names``, which this is without the names.
    """
    return [fd for fd, _ in listen_fds_with_names(unset_environment=unset_environment)]


def listen_fds_with_names(*, unset_environment: bool = True) -> list[tuple[int, str]]:
    """The fds systemd passed by socket activation, with their names.

    As ``sd_listen_fds_with_names()``: ``LISTEN_FDS`` fds from fd 3 on, for
    this process only (``LISTEN_PID``), named by ``LISTEN_FDNAMES`` (the
    ``FileDescriptorName=`` of the socket units; ``"unknown"`` without it). Each
    fd must be an open socket; it is made close-on-exec, so child processes do
    not inherit it.

    Args:
        unset_environment: remove ``LISTEN_FDS``, ``LISTEN_PID`` and
            ``LISTEN_FDNAMES`` from ``os.environ`` so that child processes do
            not take the fds for theirs. Done whatever the outcome, even when a
            variable is malformed or the fds are for another process, as
            systemd's own implementation does.

    Returns:
        ``[(3, "web"), (4, "admin")]``; ``[]`` when ``LISTEN_FDS`` or
        ``LISTEN_PID`` is unset, or ``LISTEN_PID`` is another process's pid.

    Raises:
        ValueError: a malformed variable (``LISTEN_FDS`` or ``LISTEN_PID`` not
            ASCII digits in range, ``LISTEN_FDNAMES`` not one non-empty name per
            fd), or an fd that is not a socket; the message names it.
        OSError: an fd is not open (the message names it).
    """
    if not isinstance(unset_environment, bool):
        msg = f"unset_environment must be True or False, not {unset_environment!r}"
        raise TypeError(msg)
    try:
        passed = passed_fds(os.environ)
    finally:
        if unset_environment:
            for name in LISTEN_VARIABLES:
                os.environ.pop(name, None)
    for fd, _ in passed:
        os.set_inheritable(fd, False)  # noqa: FBT003 -- the stdlib signature
    return passed
