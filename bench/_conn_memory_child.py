"""The child of ``bench/conn_memory.py``: one server, measured on request.

``python bench/_conn_memory_child.py SERVER`` serves the plain
``examples/work_app.py`` with SERVER (see ``conn_memory.SERVERS``) on a free
port of 127.0.0.1, and answers the commands its parent writes on its stdin.
"""

from __future__ import annotations

import collections
import gc
import json
import os
import socket
import sys
import threading
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OWNERS = ("shutdown_scope", "hypercorn", "uvicorn", "examples")
KEEP_ALIVE = 60
FRAMES = 12  # traceback depth kept by tracemalloc

# --- the child: one server, told what to measure on its stdin ---------------


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0  # pragma: no cover -- Linux always has it


def _histogram() -> collections.Counter[str]:
    gc.collect()
    return collections.Counter(type(o).__qualname__ for o in gc.get_objects())


def _tasks(backend: str) -> int:
    if backend == "trio":

        def walk(task: Any) -> int:
            nurseries = task.child_nurseries
            return 1 + sum(walk(t) for n in nurseries for t in n.child_tasks)

        return walk(_trio_root)
    import asyncio

    return len(asyncio.all_tasks(_asyncio_loop))


_trio_root: Any = None
_asyncio_loop: Any = None
_answers: Any = None  # the child's stdout: its own (servers log to stdout)


class _Probe:
    """Answers the parent's commands, from a thread beside the event loop."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.before: tracemalloc.Snapshot | None = None
        self.objects: collections.Counter[str] = collections.Counter()
        self.tasks = 0

    def run(self) -> None:
        for line in sys.stdin:
            command, *args = line.split()
            if command == "rss":
                _say({"rss_kb": _rss_kb()})
            elif command == "trace":
                tracemalloc.start(FRAMES)
                self.objects, self.tasks = _histogram(), self._tasks()
                self.before = tracemalloc.take_snapshot()
                _say({})
            elif command == "snapshot":
                _say(self._diff(int(args[0]), int(args[1])))
            elif command == "quit":
                os._exit(0)

    def _tasks(self) -> int:
        return _tasks(self.backend)

    def _diff(self, conns: int, top: int) -> dict[str, Any]:
        after = tracemalloc.take_snapshot()
        assert self.before is not None
        ignore = [tracemalloc.Filter(inclusive=False, filename_pattern=__file__)]
        after, before = after.filter_traces(ignore), self.before.filter_traces(ignore)
        lines = after.compare_to(before, "lineno")
        owners: collections.Counter[str] = collections.Counter()
        for diff in after.compare_to(before, "traceback"):
            owners[_owner(diff.traceback)] += diff.size_diff
        size = sum(d.size_diff for d in lines)
        blocks = sum(d.count_diff for d in lines)
        objects = _histogram() - self.objects
        return {
            "bytes": size / conns,
            "blocks": blocks / conns,
            "objects": sum(objects.values()) / conns,
            "tasks": (self._tasks() - self.tasks) / conns,
            "sites": [
                (str(d.traceback[0]), d.size_diff / conns, d.count_diff / conns)
                for d in lines[:top]
            ],
            "types": [(name, n / conns) for name, n in objects.most_common(top)],
            "owners": [(site, n / conns) for site, n in owners.most_common(top)],
        }


def _say(answer: dict[str, Any]) -> None:
    _answers.write(json.dumps(answer) + "\n")
    _answers.flush()


def _owner(traceback: tracemalloc.Traceback) -> str:
    """The innermost frame of the server's own code (ours, hypercorn, uvicorn)."""
    for frame in reversed(traceback):  # innermost last
        if any(f"/{p}/" in frame.filename for p in OWNERS):
            return f"{frame.filename}:{frame.lineno}"
    return str(traceback[-1])


def _config_hypercorn(sock: socket.socket) -> Any:
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.accesslog = None
    config.keep_alive_timeout = KEEP_ALIVE
    return config


def _config_uvicorn(sock: socket.socket, app: Any) -> Any:
    import uvicorn

    config = uvicorn.Config(
        app, fd=sock.fileno(), timeout_keep_alive=KEEP_ALIVE, log_level="warning"
    )
    config.load()  # ours takes it loaded (the bare server loads it again)
    return config


async def _ours(server: str, sock: socket.socket, app: Any) -> None:
    from shutdown_scope import graceful_scope

    async with graceful_scope() as scope:
        if server == "ours-uvicorn":
            from shutdown_scope.uvicorn import serve as serve_uvicorn

            await scope.start(serve_uvicorn, app, _config_uvicorn(sock, app))
        else:
            from shutdown_scope.hypercorn import serve

            await scope.start(serve, app, _config_hypercorn(sock))
        _ready(sock)


def _ready(sock: socket.socket) -> None:
    global _trio_root, _asyncio_loop  # noqa: PLW0603 -- the child's one server
    import sniffio

    if sniffio.current_async_library() == "trio":
        import trio

        _trio_root = trio.lowlevel.current_root_task()
    else:
        import asyncio

        _asyncio_loop = asyncio.get_running_loop()
    _say({"port": sock.getsockname()[1]})


def child(server: str) -> None:
    """Serve with ``server`` until told to quit; answer the probe's commands."""
    global _answers  # noqa: PLW0603 -- the child's one channel
    _answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.path.insert(0, str(ROOT / "examples"))
    from work_app import App

    app = App()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    sock.setblocking(False)  # noqa: FBT003 -- the stdlib signature
    backend = "trio" if server.endswith("trio") else "asyncio"
    threading.Thread(target=_Probe(backend).run, daemon=True).start()
    if server.startswith("ours"):
        import anyio

        anyio.run(_ours, server, sock, app, backend=backend)
    elif server == "bare-uvicorn":
        import asyncio

        import uvicorn

        async def bare_uvicorn() -> None:
            uv = uvicorn.Server(_config_uvicorn(sock, app))
            task = asyncio.create_task(uv.serve())
            while not uv.started:  # noqa: ASYNC110 -- uvicorn has no event for it
                await asyncio.sleep(0.01)
            _ready(sock)
            await task

        asyncio.run(bare_uvicorn())
    else:
        _bare_hypercorn(backend, sock, app)


def _bare_hypercorn(backend: str, sock: socket.socket, app: Any) -> None:
    config = _config_hypercorn(sock)
    if backend == "trio":
        import hypercorn.trio
        import trio

        async def bare_trio() -> None:
            async with trio.open_nursery() as nursery:
                await nursery.start(hypercorn.trio.serve, app, config)
                _ready(sock)

        trio.run(bare_trio)
    else:
        import asyncio

        import hypercorn.asyncio

        async def bare_asyncio() -> None:
            task = asyncio.create_task(hypercorn.asyncio.serve(app, config))
            await asyncio.sleep(0.2)  # it has no started(); it binds at once
            _ready(sock)
            await task

        asyncio.run(bare_asyncio())


if __name__ == "__main__":
    child(sys.argv[1])
