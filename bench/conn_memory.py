"""Memory per idle keep-alive connection, broken down: RSS, tracemalloc, objects.

``python bench/conn_memory.py [--quick] [--conns N] [--top K]`` runs each server
in a fresh child process (this script with ``--child``) on 127.0.0.1, serving
the plain ``examples/work_app.py``, one after the other:

* **bare-asyncio**, **bare-trio**: hypercorn's own ``serve()`` of its asyncio
  and Trio trees; **bare-uvicorn**: ``uvicorn.Server.serve()``;
* **ours-asyncio**, **ours-trio**: ``shutdown_scope.hypercorn.serve`` under a
  ``graceful_scope``; **ours-uvicorn**: ``shutdown_scope.uvicorn.serve``.

Per server, after a warm-up: N connections each get one ``GET /work?ms=0``
answered and stay open, idle (keep-alive 60 s). Measured twice on the same
server: first the resident memory (VmRSS) before and with them, without
tracing; then, the connections closed, tracemalloc is started and N new idle
connections are opened: the bytes Python allocated that are still held (the
difference of two snapshots), the objects of each type (``gc.get_objects``)
and the tasks, all per connection. RSS also counts the allocator's slack and
the kernel's socket buffers are not in it; tracemalloc counts only Python's
allocations, exactly.

Printed: a table, KB/conn by RSS and by tracemalloc, blocks, gc objects and
tasks per connection; then, for each server, its top allocation sites
(``file:line``, bytes per connection) and its most numerous new object types.
The bench is a measurement: it exits 0 whatever the figures (1 if a server
could not be started). The goal (issue 15): 8 KB per idle connection.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import json
import os
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SERVERS = (
    "bare-asyncio",
    "ours-asyncio",
    "bare-trio",
    "ours-trio",
    "bare-uvicorn",
    "ours-uvicorn",
)
REQUEST = b"GET /work?ms=0 HTTP/1.1\r\nHost: bench\r\n\r\n"
KEEP_ALIVE = 60
FRAMES = 12  # traceback depth kept by tracemalloc
GOAL_KB = 8.0
OWNERS = ("shutdown_scope", "hypercorn", "uvicorn", "examples")


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


# --- the parent: clients, and the table ----------------------------------------


def open_idle(port: int, count: int) -> list[socket.socket]:
    """``count`` connections, each with one request answered: idle keep-alive."""
    conns = []
    for _ in range(count):
        conn = socket.create_connection(("127.0.0.1", port), timeout=30)
        conn.sendall(REQUEST)
        conns.append(conn)
    for conn in conns:
        if not conn.recv(65536).startswith(b"HTTP/1.1 200"):
            msg = "an idle connection's request was not answered 200"
            raise RuntimeError(msg)
    return conns


class Child:
    """One server child process and its probe."""

    def __init__(self, server: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--child", server],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.port = self._read()["port"]

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            msg = f"the server child exited ({self.proc.wait()})"
            raise RuntimeError(msg)
        answer: dict[str, Any] = json.loads(line)
        return answer

    def ask(self, command: str) -> dict[str, Any]:
        """Send the probe a command; its JSON answer."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        """Quit (or kill) the child."""
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def measure(server: str, conns: int, top: int) -> dict[str, Any]:
    """One fresh server: RSS per connection, then tracemalloc per connection."""
    child = Child(server)
    try:
        for conn in open_idle(child.port, 8):  # warm: imports, first requests
            conn.close()
        time.sleep(0.2)
        rss0 = child.ask("rss")["rss_kb"]
        idle = open_idle(child.port, conns)
        time.sleep(0.2)
        rss1 = child.ask("rss")["rss_kb"]
        for conn in idle:
            conn.close()
        time.sleep(0.3)
        child.ask("trace")
        idle = open_idle(child.port, conns)
        time.sleep(0.2)
        found = child.ask(f"snapshot {conns} {top}")
        for conn in idle:
            conn.close()
    finally:
        child.close()
    found["rss_kb"] = (rss1 - rss0) / conns
    return found


def report(results: dict[str, dict[str, Any]]) -> None:
    """The table, then each server's top sites and object types."""
    print(
        f"  {'server':<14}{'rss-KB':>8}{'traced-KB':>10}{'blocks':>8}"
        f"{'objects':>9}{'tasks':>7}"
    )
    for name, r in results.items():
        print(
            f"  {name:<14}{r['rss_kb']:>8.1f}{r['bytes'] / 1024:>10.2f}"
            f"{r['blocks']:>8.1f}{r['objects']:>9.1f}{r['tasks']:>7.2f}"
        )
    print("  per idle connection; KB: 1024 bytes")
    for name, r in results.items():
        print(f"{name}: top allocation sites (bytes and blocks per connection)")
        for site, size, count in r["sites"]:
            print(f"    {size:>8.0f} B {count:>6.1f}  {_short(site)}")
        print(f"  {name}: by the server code that allocated (bytes per connection)")
        for site, size in r["owners"]:
            print(f"    {size:>8.0f} B  {_short(site)}")
        types = ", ".join(f"{t} {n:.1f}" for t, n in r["types"])
        print(f"  objects per connection: {types}")
    for name in ("ours-asyncio", "ours-trio", "ours-uvicorn"):
        if name in results:
            kb = results[name]["bytes"] / 1024
            print(
                f"goal: {name} <= {GOAL_KB:g} KB traced per idle connection:"
                f" {'met' if kb <= GOAL_KB else 'NOT MET'} ({kb:.2f} KB;"
                f" RSS {results[name]['rss_kb']:.1f} KB)"
            )


def _short(site: str) -> str:
    for marker in ("site-packages/", str(ROOT) + "/", "/lib/python"):
        if marker in site:
            return site.split(marker, 1)[1]
    return site


def main() -> int:
    """Parse the options, measure each server, print the breakdown."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 connections")
    parser.add_argument("--conns", type=int, default=1000, help="idle connections")
    parser.add_argument("--top", type=int, default=12, help="sites and types shown")
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=SERVERS)
    parser.add_argument("--child", choices=SERVERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return 0
    conns = 100 if args.quick else args.conns
    if conns < 1:
        parser.error("--conns must be at least 1")
    print(
        f"conn memory bench: Python {sys.version.split()[0]}; {conns} idle"
        " keep-alive connections per server, each with one request answered",
        flush=True,
    )
    try:
        results = {name: measure(name, conns, args.top) for name in args.servers}
    except RuntimeError as error:
        print(f"conn memory bench: {error}", file=sys.stderr)
        return 1
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
