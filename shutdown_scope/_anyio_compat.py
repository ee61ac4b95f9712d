"""anyio's internals, in one place: a task spawned without its ``TaskHandle``.

Since anyio 4.14, every ``TaskGroup.start_soon`` builds a ``TaskHandle`` (a
cancel scope with two sets, an event and a wrapper coroutine) that nobody
awaits: about 3 KB per task on asyncio, 1.6 KB on Trio. A server spawning a
task per connection pays it for every idle keep-alive connection.
``spawn_unhandled`` spawns as anyio did before 4.14, with the same semantics:
the task belongs to the group (which waits for it), is cancelled with the
group's cancel scope, and its exception cancels the group and propagates.

Verified with anyio 4.11 to 4.16 (pyproject allows ``anyio>=4.11``): on Trio
the task group's ``_nursery``; on asyncio its ``_tasks``, ``_exceptions``,
``_on_completed_fut``, its cancel scope's ``_tasks``, ``_host_task`` and
``_effectively_cancelled``, and the backend's ``_task_states``. If they are
not there (a later anyio), ``start_soon`` is used: the cost comes back, the
semantics stay (tests/test_anyio_compat.py fails then, to tell).
"""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Callable, Coroutine, MutableMapping
from typing import Any

import sniffio
from anyio.abc import TaskGroup

__all__ = ["spawn_unhandled", "spawns_unhandled"]

_ASYNCIO_GROUP = ("_tasks", "_exceptions", "_on_completed_fut", "cancel_scope")
_ASYNCIO_SCOPE = ("_tasks", "_host_task", "_effectively_cancelled", "_active")
_ASYNCIO_BACKEND = ("_task_states", "TaskState", "_eager_task_factory_code")


def spawns_unhandled(group: TaskGroup) -> bool:
    """Whether ``spawn_unhandled`` can skip the ``TaskHandle`` for ``group``."""
    library = sniffio.current_async_library()
    if library == "trio":
        import trio

        return isinstance(getattr(group, "_nursery", None), trio.Nursery)
    if library != "asyncio":
        return False
    backend = sys.modules.get("anyio._backends._asyncio")
    scope = getattr(group, "cancel_scope", None)
    return (
        backend is not None
        and isinstance(group, backend.TaskGroup)
        and all(hasattr(backend, name) for name in _ASYNCIO_BACKEND)
        and all(hasattr(group, name) for name in _ASYNCIO_GROUP)
        and all(hasattr(scope, name) for name in _ASYNCIO_SCOPE)
    )


def spawn_unhandled(
    group: TaskGroup,
    fn: Callable[..., Coroutine[Any, Any, None]],
    *args: object,
    name: str,
    unhandled: bool,
) -> None:
    """``group.start_soon(fn, *args, name=name)``, without the ``TaskHandle``.

    Args:
        group: an entered anyio task group.
        fn: the task's async function.
        args: its arguments.
        name: the task's name.
        unhandled: ``spawns_unhandled(group)``, asked once for the group.
    """
    if not unhandled:
        group.start_soon(fn, *args, name=name)
    elif sniffio.current_async_library() == "trio":
        group._nursery.start_soon(fn, *args, name=name)  # type: ignore[attr-defined]
    else:
        _spawn_on_asyncio(group, fn(*args), name)


def _spawn_on_asyncio(
    group: Any,  # anyio's asyncio TaskGroup: its internals are untyped
    coro: Coroutine[Any, Any, None],
    name: str,
) -> None:
    # anyio 4.11's TaskGroup._spawn (start_soon's part), in substance.
    from anyio._backends._asyncio import (
        TaskState,
        _eager_task_factory_code,
        _task_states,
    )

    scope = group.cancel_scope
    if not scope._active:
        coro.close()
        msg = "This task group is not active; no new tasks can be started."
        raise RuntimeError(msg)  # anyio's words
    loop = asyncio.get_running_loop()
    factory = loop.get_task_factory()
    if (
        factory is not None
        and getattr(factory, "__code__", None) is _eager_task_factory_code
        and (closure := getattr(factory, "__closure__", None))
    ):
        # Not eagerly: the task must be in the group before it first runs.
        task = closure[0].cell_contents(coro, loop=loop, name=name)
    else:
        task = loop.create_task(coro, name=name)
    _task_states[task] = TaskState(parent_id=id(scope._host_task), cancel_scope=scope)
    scope._tasks.add(task)
    group._tasks.add(task)
    if sys.version_info >= (3, 14) and scope._host_task is not None:
        asyncio.future_add_to_awaited_by(task, scope._host_task)
    task.add_done_callback(functools.partial(_task_done, group, _task_states))


def _task_done(
    group: Any,  # as above
    task_states: MutableMapping[asyncio.Task[Any], Any],
    task: asyncio.Task[None],
) -> None:
    scope = group.cancel_scope
    if sys.version_info >= (3, 14) and scope._host_task is not None:
        asyncio.future_discard_from_awaited_by(task, scope._host_task)
    scope._tasks.discard(task)
    group._tasks.discard(task)
    task_states.pop(task, None)
    waiting = group._on_completed_fut  # the group's exit, for its last task
    if waiting is not None and not group._tasks and not waiting.done():
        waiting.set_result(None)
    try:
        error = task.exception()
    except asyncio.CancelledError as cancelled:
        error = cancelled
    if error is not None:
        # A task cancelled by itself cancels the group too, as anyio's do.
        if not isinstance(error, asyncio.CancelledError):
            group._exceptions.append(error)
        if not scope._effectively_cancelled:
            scope.cancel()
