"""Memory per idle keep-alive connection, broken down: RSS, tracemalloc, objects.

``python bench/conn_memory.py [--quick] [--conns N] [--top K]`` runs each server
in a fresh child process (``bench/_conn_memory_child.py``) on 127.0.0.1, serving
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
import contextlib
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHILD = Path(__file__).with_name("_conn_memory_child.py")
SERVERS = (
    "bare-asyncio",
    "ours-asyncio",
    "bare-trio",
    "ours-trio",
    "bare-uvicorn",
    "ours-uvicorn",
)
REQUEST = b"GET /work?ms=0 HTTP/1.1\r\nHost: bench\r\n\r\n"
GOAL_KB = 8.0


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
            [
                sys.executable,
                str(Path(__file__).with_name("_conn_memory_child.py")),
                server,
            ],
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
    args = parser.parse_args()
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
