"""The one place where asyncio and Trio differ: waking the loop from a signal
handler or another thread, and listing tasks for a diagnostic dump."""

from __future__ import annotations

import asyncio
import signal
import socket
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from typing import TYPE_CHECKING, Any, Protocol

import anyio.lowlevel

if TYPE_CHECKING:
    import trio

__all__ = ["LoopHandle", "current_loop_handle"]


class LoopHandle(Protocol):
    def run_sync_soon(self, fn: Callable[..., object], *args: Any) -> bool:
        """Schedule ``fn(*args)`` on the loop; safe from threads and signal
        handlers. False if the loop is gone."""

    def dump_tasks(self) -> str:
        """Best-effort text listing of the loop's tasks, callable from any thread."""

    def wake_on_signals(self) -> AbstractContextManager[None]:
        """While entered, a signal wakes the loop, whichever thread gets it.

        The kernel may hand a process-directed signal to any thread that does not
        block it; the C-level handler then only sets a flag, and a main thread
        asleep in ``epoll_wait`` would not run the Python handler until something
        else woke it. Python's answer is ``signal.set_wakeup_fd``: Trio always
        sets one; asyncio only for ``loop.add_signal_handler``. Main thread only.
        """


def _frames(frames: list[tuple[str, int, str]], indent: str) -> str:
    return "".join(f"{indent}{fn}:{line} in {name}\n" for fn, line, name in frames)


def _await_chain(coro: object) -> list[tuple[str, int, str]]:
    """Where a coroutine is suspended, outermost first, following ``cr_await``
    (``Task.get_stack()`` shows only the outermost frame)."""
    found = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        found.append((frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name))
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return found


class _AsyncioHandle:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    @contextmanager
    def wake_on_signals(self) -> Iterator[None]:
        # Counted per loop: scopes and signal receivers nest in any order, and
        # the wakeup fd must stay until the last of them has exited.
        users = _WAKE_USERS.get(self._loop, 0)
        _WAKE_USERS[self._loop] = users + 1
        try:
            if users:
                yield
            else:
                with self._own_wakeup_fd():
                    yield
        finally:
            _WAKE_USERS[self._loop] -= 1
            if not _WAKE_USERS[self._loop]:
                del _WAKE_USERS[self._loop]

    @contextmanager
    def _own_wakeup_fd(self) -> Iterator[None]:
        previous = signal.set_wakeup_fd(-1)
        if previous != -1:  # someone wakes the loop already (add_signal_handler)
            signal.set_wakeup_fd(previous)
            yield
            return
        reader, writer = socket.socketpair()
        for sock in (reader, writer):
            sock.setblocking(False)  # noqa: FBT003 -- the stdlib signature
        self._loop.add_reader(reader, _drain, reader)
        signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        try:
            yield
        finally:
            current = signal.set_wakeup_fd(-1)
            if current != writer.fileno():  # someone else's since: keep theirs
                signal.set_wakeup_fd(current)
            self._loop.remove_reader(reader)
            reader.close()
            writer.close()

    def run_sync_soon(self, fn: Callable[..., object], *args: Any) -> bool:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: the scope is over
            return False
        return True

    def dump_tasks(self) -> str:
        for _ in range(3):  # the task set may change under us: it is not ours
            try:
                tasks = list(asyncio.all_tasks(self._loop))
                break
            except RuntimeError:
                continue
        else:
            return "  (task list changed while reading it)\n"
        out = [f"asyncio tasks ({len(tasks)}):\n"]
        for task in sorted(tasks, key=lambda t: t.get_name()):
            out.append(f"  {task.get_name()}: {task.get_coro()!r}\n")
            out.append(_frames(_await_chain(task.get_coro()), "      "))
        return "".join(out)


# Loops whose wakeup fd is in use, with the number of users (main thread only).
_WAKE_USERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, int] = (
    weakref.WeakKeyDictionary()
)


def _drain(sock: socket.socket) -> None:
    with suppress(OSError):  # empty (BlockingIOError), or closed under us
        sock.recv(4096)


class _TrioHandle:
    def __init__(
        self, token: trio.lowlevel.TrioToken, root: trio.lowlevel.Task
    ) -> None:
        self._token = token
        self._root = root

    def wake_on_signals(self) -> AbstractContextManager[None]:
        return nullcontext()  # trio.run sets its own wakeup fd

    def run_sync_soon(self, fn: Callable[..., object], *args: Any) -> bool:
        try:
            self._token.run_sync_soon(fn, *args)
        except RuntimeError:  # trio.RunFinishedError: the scope is over
            return False
        return True

    def dump_tasks(self) -> str:
        out = ["trio task tree:\n"]
        pending = [(self._root, 1)]
        while pending:
            task, depth = pending.pop()
            out.append(f"{'  ' * depth}{task.name}\n")
            try:
                stack = [
                    (f.f_code.co_filename, lineno, f.f_code.co_name)
                    for f, lineno in task.iter_await_frames()
                ]
                out.append(_frames(stack, "  " * depth + "    "))
                children = [t for n in task.child_nurseries for t in n.child_tasks]
            except (RuntimeError, ValueError):  # it changed while we looked
                continue
            pending.extend((child, depth + 1) for child in reversed(children))
        return "".join(out)


def current_loop_handle() -> LoopHandle:
    """The handle of the running event loop. Must be called from async code."""
    native = anyio.lowlevel.current_token().native_token
    if isinstance(native, asyncio.AbstractEventLoop):
        return _AsyncioHandle(native)
    import trio  # only when Trio is the running backend

    return _TrioHandle(native, trio.lowlevel.current_root_task())  # type: ignore[arg-type]
