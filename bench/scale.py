"""Idle keep-alive connections at SIGTERM: drain time and memory, by their number.

``python bench/scale.py [--quick] [--conns N ...]`` runs, for each number N of
connections (100, 1,000 and 5,000; ``--quick``: 100), four servers one after
the other, each as a fresh child process on 127.0.0.1 serving ``/work?ms=N``:

* **bare-asyncio**: the hypercorn CLI (``python -m hypercorn``) with the plain
  ``examples/work_app.py``; **bare-uvicorn**: the uvicorn CLI, the same app;
* **ours-asyncio**, **ours-trio**: ``examples/hypercorn_app.py``
  (``shutdown_scope.hypercorn.serve`` under a ``graceful_scope``).

All with a 60 s keep-alive (idle connections must stay open while the bench
opens the rest) and a 4,096 backlog. Per server, the memory two ways:

* **KB/conn**, what N idle connections hold: N connections are opened 32 at a
  time, each batch with its one request answered before the next (as 32
  keep-alive clients would), and the resident memory (RSS, the process and
  its children, from /proc) with them open, less the RSS before, divided by N.
  This is what ``bench/conn_memory.py`` measures (its RSS column), and the
  figure to trust for what idle connections cost.
* **burst-KB**: those closed, N connections are opened at once, each sending
  its request before any answer is read: the server then has up to N requests
  in flight together, and the allocator keeps the high-water of that burst
  (freed, not returned to the system: opened again, N more connections add
  next to nothing). The RSS with them, less the same RSS before, divided by
  N: what a burst of N first requests leaves, not what the connections hold.

Those N stay open, idle; then 8 more connections each send ``/work?ms=200``
(``--work-ms``) once the server is at rest (it uses no CPU for 100 ms: done with the N
requests); 50 ms later the server gets SIGTERM. Printed also: the peak RSS
(VmHWM) and the time from the last of the 8 answers to the exit of the server
process (``waitpid``): the drain, which should not grow with N.

The goals (from the issue): exit within 100 ms of the last request in flight,
flat in N; at most 8 KB per idle connection. Timings vary with the machine's
load; the bench is a measurement and exits 0 whether or not a goal is met (1
if a server could not be started). It raises its RLIMIT_NOFILE (the servers
inherit it).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import resource
import socket
import statistics
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server_children import Server, StartError

IN_FLIGHT = 8
WORK_MS = 200
SIGNAL_AFTER = 0.05  # the 8 requests are read by the server by then
KEEP_ALIVE = 60
BACKLOG = 4096
QUIET_PERIOD = 0.1  # no CPU used for this long: the server is at rest
QUIET_LIMIT = 30.0
GOAL_DRAIN_MS = 100.0
GOAL_KB = 8.0
SERVERS = (
    ("bare", "asyncio"),
    ("ours", "asyncio"),
    ("ours", "trio"),
    ("bare", "uvicorn"),
)
REQUEST = b"GET /work?ms=0 HTTP/1.1\r\nHost: bench\r\n\r\n"
IDLE_BATCH = 32  # connections opened (and answered) together for KB/conn


class ScaleServer(Server):
    """drain.py's server child, with a long keep-alive and a deep backlog."""

    def _argv(self) -> list[str]:
        argv = super()._argv()
        if self.worker == "uvicorn":
            extra = ["--timeout-keep-alive", str(KEEP_ALIVE), "--backlog", str(BACKLOG)]
        else:  # the same option names for the hypercorn CLI and the example
            extra = ["--keep-alive", str(KEEP_ALIVE), "--backlog", str(BACKLOG)]
        return argv[:-1] + extra + argv[-1:] if self.kind == "bare" else argv + extra


def _family(pid: int) -> list[int]:
    """The process and its descendants (the bare hypercorn CLI serves from a child)."""
    found, parents = [pid], {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(stat[1])
    for child in sorted(parents):
        if parents[child] in found:
            found.append(child)
    return found


def _memory_kb(pid: int, field: str) -> int:
    """``VmRSS`` or ``VmHWM`` of the process and its descendants, in KiB."""
    total = 0
    for member in _family(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
    return total


def _cpu_ticks(pid: int) -> int:
    """User + system CPU time of the process and its descendants, in clock ticks."""
    total = 0
    for member in _family(pid):
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(stat[11]) + int(stat[12])
    return total


def wait_quiet(pid: int, limit: float = QUIET_LIMIT) -> None:
    """Wait until the server uses no CPU for a while: done with the N requests.

    A client has its answer before the server is done with the request (Trio
    finishes thousands of them well after the last answer left): a SIGTERM
    then would time that backlog as part of the drain.
    """
    deadline = time.monotonic() + limit
    last = _cpu_ticks(pid)
    while time.monotonic() < deadline:
        time.sleep(QUIET_PERIOD)
        now = _cpu_ticks(pid)
        if now - last <= 1:  # a tick: the timers of a server at rest
            return
        last = now


def open_idle(address: tuple[str, int], count: int) -> list[socket.socket]:
    """``count`` connections, each with one request answered: idle keep-alive."""
    conns = []
    for _ in range(count):
        conn = socket.create_connection(address, timeout=30)
        conn.sendall(REQUEST)
        conns.append(conn)
    for conn in conns:
        answer = conn.recv(65536)
        if not answer.startswith(b"HTTP/1.1 200"):
            msg = f"an idle connection's request got {answer[:40]!r}"
            raise RuntimeError(msg)
    return conns


def open_idle_batched(address: tuple[str, int], count: int) -> list[socket.socket]:
    """``open_idle``, ``IDLE_BATCH`` at a time: no burst of concurrent requests."""
    conns: list[socket.socket] = []
    while len(conns) < count:
        conns += open_idle(address, min(IDLE_BATCH, count - len(conns)))
    return conns


def _in_flight(address: tuple[str, int], done: list[float]) -> None:
    with socket.create_connection(address, timeout=30) as conn:
        conn.sendall(f"GET /work?ms={WORK_MS} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        answer, body = b"", f"done {WORK_MS}\n".encode()
        # The whole answer: its body with a Content-Length, or chunked to the end.
        while not (body in answer and answer.endswith((body, b"0\r\n\r\n"))):
            chunk = conn.recv(65536)
            if not chunk:
                return  # lost: no time recorded
            answer += chunk
        done.append(time.monotonic())


@dataclasses.dataclass
class Row:
    """One server with N idle connections."""

    name: str
    conns: int
    rss_before_kb: int
    rss_idle_kb: int
    rss_burst_kb: int
    peak_kb: int
    answered: int
    drain_ms: float
    exit_code: int

    @property
    def per_conn_kb(self) -> float:
        """Memory per idle connection, KiB."""
        return (self.rss_idle_kb - self.rss_before_kb) / self.conns

    @property
    def burst_kb(self) -> float:
        """RSS left per connection by N connections' first requests at once, KiB."""
        return (self.rss_burst_kb - self.rss_before_kb) / self.conns


def measure(kind: str, worker: str, conns: int) -> Row:
    """One fresh server: open the idle connections, then 8 requests and SIGTERM."""
    server = ScaleServer(kind, worker)
    try:
        server.wait_ready(time.monotonic() + 30)
        url = urlsplit(server.url)
        address = (url.hostname or "127.0.0.1", url.port or 80)
        # Warm: the first requests import and allocate what every request needs.
        for conn in open_idle(address, 4):
            conn.close()
        time.sleep(0.2)
        pid = server.proc.pid
        before = _memory_kb(pid, "VmRSS")
        idle = open_idle_batched(address, conns)
        wait_quiet(pid)
        with_idle = _memory_kb(pid, "VmRSS")
        for conn in idle:
            conn.close()
        wait_quiet(pid)  # every one of them closed by the server
        idle = open_idle(address, conns)
        wait_quiet(pid)
        with_burst = _memory_kb(pid, "VmRSS")
        done: list[float] = []
        threads = [
            threading.Thread(target=_in_flight, args=(address, done))
            for _ in range(IN_FLIGHT)
        ]
        for thread in threads:
            thread.start()
        time.sleep(SIGNAL_AFTER)
        peak = _memory_kb(pid, "VmHWM")
        _, exited = server.signal_and_wait()
        for thread in threads:
            thread.join(30)
        for conn in idle:
            conn.close()
        last = max(done) if done else exited
        return Row(
            server.name,
            conns,
            before,
            with_idle,
            with_burst,
            peak,
            len(done),
            (exited - last) * 1000,
            -1 if server.killed else server.exit_code,
        )
    finally:
        server.close()


def raise_nofile(needed: int) -> None:
    """Raise the soft RLIMIT_NOFILE to the hard one; say if it is still too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard != resource.RLIM_INFINITY and hard < needed:
        print(f"scale bench: RLIMIT_NOFILE {hard} < {needed}: expect failures")


def report(rows: list[Row]) -> None:
    """The table and the goals."""
    print(
        f"  {'server':<13}{'conns':>6}{'rss0-MB':>9}{'rss-MB':>8}{'peak-MB':>9}"
        f"{'KB/conn':>9}{'burst-KB':>9}{'answered':>9}{'last->exit':>11}{'exit':>5}"
    )
    for row in rows:
        print(
            f"  {row.name:<13}{row.conns:>6}{row.rss_before_kb / 1024:>9.1f}"
            f"{row.rss_idle_kb / 1024:>8.1f}{row.peak_kb / 1024:>9.1f}"
            f"{row.per_conn_kb:>9.1f}{row.burst_kb:>9.1f}{row.answered:>9}{row.drain_ms:>11.1f}"
            f"{row.exit_code:>5}"
        )
    print(
        "  MB and KB: 1024-based; KB/conn: held per idle connection (opened"
        f" {IDLE_BATCH} at a time); burst-KB: RSS left per connection by N first"
        " requests at once; last->exit: ms from the last of the 8 answers"
    )
    for name in ("ours-asyncio", "ours-trio"):
        mine = [row for row in rows if row.name == name]
        drains = [row.drain_ms for row in mine]
        kbs = [row.per_conn_kb for row in mine]
        ok = max(drains) <= GOAL_DRAIN_MS and all(r.answered == IN_FLIGHT for r in mine)
        print(
            f"goal: {name} exits within {GOAL_DRAIN_MS:g} ms of the last request in"
            f" flight: {'met' if ok else 'NOT MET'} (max {max(drains):.1f} ms);"
            f" <= {GOAL_KB:g} KB per idle connection:"
            f" {'met' if max(kbs) <= GOAL_KB else 'NOT MET'}"
            f" (median {statistics.median(kbs):.1f} KB)"
        )


def main() -> int:
    """Parse the options, measure every server at every N, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 connections only")
    parser.add_argument("--conns", type=int, nargs="+", help="numbers of connections")
    parser.add_argument(
        "--work-ms",
        type=int,
        default=200,
        help="how long each request in flight works, ms (default 200)",
    )
    args = parser.parse_args()
    counts = args.conns or ([100] if args.quick else [100, 1000, 5000])
    if min(counts) < 1:
        parser.error("--conns must be at least 1")
    if args.work_ms < 0:
        parser.error("--work-ms must be at least 0")
    global WORK_MS  # noqa: PLW0603 -- the requests in flight read it
    WORK_MS = args.work_ms
    raise_nofile(max(counts) * 2 + 100)
    print(
        f"scale bench: Python {sys.version.split()[0]}; N idle keep-alive"
        f" connections, then {IN_FLIGHT} x /work?ms={WORK_MS} and SIGTERM"
        f" {SIGNAL_AFTER * 1000:.0f} ms later; servers one at a time, fresh each",
        flush=True,
    )
    rows = []
    try:
        for index, conns in enumerate(counts):
            order = SERVERS if index % 2 == 0 else SERVERS[::-1]
            found = {f"{k}-{w}": measure(k, w, conns) for k, w in order}
            rows += [found[f"{k}-{w}"] for k, w in SERVERS]
    except StartError as error:
        print(f"scale bench: {error}", file=sys.stderr)
        return 1
    report(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
