"""What ``ShutdownMiddleware`` adds to each request, measured in-process.

``python bench/middleware_cost.py [--quick] [--rounds N] [--calls N]`` calls a
tiny ASGI app (a 200 with a two-byte body) once per simulated request, bare and
wrapped in ``ShutdownMiddleware`` (under a ``graceful_scope``'s token child, as
``serve()`` uses it), and prints nanoseconds per request of each and their
difference: as ``shutdown_scope.hypercorn.serve()`` and
``shutdown_scope.uvicorn.serve()`` configure it (their servers add
``Connection: close`` themselves: no send wrapper; the token goes into the
server's own scope: no copy) and as a user wraps an app under another server
(a send wrapper for HTTP/1.x, and a copy of the scope). No server and no event loop:
the coroutine is driven by hand (the app never suspends), so only the Python
the middleware runs is timed, in CPU time of this thread
(``time.thread_time_ns``: time other processes take on a shared machine is not
counted). Each round times all three, a different one first in turn; the
figures are the medians of the rounds.

The goal (from the issue): the middleware costs at most 500 ns per request over
the bare app. The bench is a measurement: it exits 0 whether or not it is met.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import anyio

from shutdown_scope import graceful_scope
from shutdown_scope.asgi import Message, Receive, Scope, Send, ShutdownMiddleware

GOAL_NS = 500.0
START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain")],
}
BODY: Message = {"type": "http.response.body", "body": b"ok"}


async def app(scope: Scope, receive: Receive, send: Send) -> None:  # noqa: ARG001 -- ASGI
    """The bare app: a whole response, no await that suspends."""
    await send(START)
    await send(BODY)


async def receive() -> Message:
    """The server's receive (never called by the app)."""
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: Message) -> None:
    """The server's send: drops the message."""


def request_scope() -> Scope:
    """A scope like hypercorn's for ``GET /health`` over HTTP/1.1."""
    return {
        "type": "http",
        "asgi": {"spec_version": "2.1", "version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/health",
        "raw_path": b"/health",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
        "extensions": {},
    }


Call = Callable[[Scope, Receive, Send], Coroutine[Any, Any, None]]


def time_calls(call: Call, calls: int) -> float:
    """Nanoseconds per request of ``call``, each request on a fresh scope."""
    scopes = [request_scope() for _ in range(calls)]
    begin = time.thread_time_ns()
    for scope in scopes:
        coro = call(scope, receive, send)
        try:
            coro.send(None)
        except StopIteration:
            pass
        else:  # pragma: no cover -- the app never suspends
            msg = "the app suspended"
            raise RuntimeError(msg)
    return (time.thread_time_ns() - begin) / calls


async def measure(rounds: int, calls: int) -> dict[str, list[float]]:
    """``rounds`` timings of the bare app and of each wrapped one, in turn."""
    timings: dict[str, list[float]] = {"bare": [], "serve()": [], "user": []}
    async with graceful_scope(signals=()) as scope:
        token = scope.token.child("http")
        served = ShutdownMiddleware(app, token, readiness_path="/readyz")
        served._under_serve()  # noqa: SLF001 -- the package's own
        calls_of: dict[str, Call] = {
            "bare": app,
            "serve()": served,
            "user": ShutdownMiddleware(app, token, readiness_path="/readyz"),
        }
        for call in calls_of.values():  # warm-up
            time_calls(call, calls)
        names = list(calls_of)
        for index in range(rounds):
            shift = index % len(names)  # each goes first in turn
            for name in names[shift:] + names[:shift]:
                timings[name].append(time_calls(calls_of[name], calls))
        scope.request_shutdown("bench done")
    return timings


def main() -> int:
    """Parse the options, measure, print the figures and the goal."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few, short rounds")
    parser.add_argument("--rounds", type=int, help="timings of each (default 15)")
    parser.add_argument("--calls", type=int, help="requests per timing")
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 15)
    calls = args.calls or (2_000 if args.quick else 50_000)
    if rounds < 1 or calls < 1:
        parser.error("--rounds and --calls must be at least 1")
    timings = anyio.run(measure, rounds, calls)
    bare = timings["bare"]
    rows = [("bare", bare)]
    extras: dict[str, list[float]] = {}
    for name, label in (("serve()", "as serve() builds it"), ("user", "user-wrapped")):
        extras[label] = [w - b for w, b in zip(timings[name], bare, strict=True)]
        rows += [(f"wrapped, {label}", timings[name]), ("  extra", extras[label])]
    print(
        f"middleware cost: Python {sys.version.split()[0]}, {rounds} rounds x"
        f" {calls} requests, medians (min - max)"
    )
    for name, values in rows:
        print(
            f"  {name:<30} {statistics.median(values):8.0f} ns/request"
            f"  ({min(values):.0f} - {max(values):.0f})"
        )
    for label, extra in extras.items():
        cost = statistics.median(extra)
        verdict = "met" if cost <= GOAL_NS else "NOT MET"
        print(
            f"goal: middleware cost ({label}) <= {GOAL_NS:.0f} ns/request:"
            f" {verdict} ({cost:.0f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
