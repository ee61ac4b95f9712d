"""A rolling update of three replicas behind HAProxy, done as Kubernetes does it.

``python bench/fleet.py [--quick] [--only SERVER] [--clients N] [--loopback]
[--announce-delay S] [--json PATH] [--verbose]`` runs the same rehearsal for two
kinds of replica, one after the other:

* **shutdown-scope**: ``shutdown-scope run --listen ADDR -- shutdown-scope serve
  --app-dir examples --factory hypercorn_app:App --readiness-path /readyz
  --announce-delay 1 ...``: on SIGTERM, /readyz answers 503 while the rest is
  still served for the announce delay; then the listener closes and it drains;
* **uvicorn**: ``uvicorn --host H --port P --app-dir examples work_app:app``, no
  launcher, no readiness endpoint (HAProxy checks ``/work?ms=0``): on SIGTERM it
  closes its listener at once and finishes what is in flight.

Each replica has an address of its own, in a network namespace of its own as a
pod has (``bench/_netns.py``; loopback addresses without root or iproute2, or
with ``--loopback``). HAProxy runs ``examples/deploy/haproxy.cfg`` with six
addresses: replicas 1-3 serve, 4-6 are the new ones' (DOWN until they listen).

Under steady load through HAProxy (``examples/http_load.py``'s keep-alive
clients on ``/work?ms=20``), the update goes as a Deployment's with ``maxSurge:
1, maxUnavailable: 0``: start a new replica, wait until HAProxy's stats socket
(``show stat``) says it is UP, SIGTERM an old one, and go on with the next at
once (a terminating pod does not count against the surge). HAProxy learns of a
removal only from its own failed checks. The load runs on a little after the
last old replica exited; then the new ones get SIGTERM.

Printed per kind: the requests sent, and those that failed (answered with
another status than 200, lost mid-request, or refused connections); how many
old replicas HAProxy said DOWN while their process still ran (the stats socket
polled every 10 ms after the SIGTERM, /proc read after each answer); each
replica's exit code. The goal: 0 failed requests. The bench is a measurement: it
exits 0 whether or not the goal is met, 1 if HAProxy is missing or HAProxy or a
replica could not be started.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import anyio
import anyio.abc

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(EXAMPLES))
from _haproxy import HAProxyError, find_haproxy  # noqa: E402
from _replicas import DRAIN_TIMEOUT, BenchError, Replica  # noqa: E402
from _rolling_update import (  # noqa: E402
    REPLICAS,
    SERVERS,
    WORK_MS,
    Outcome,
    Plan,
    rehearse,
)
from _table import table_row  # noqa: E402

# -- the report ----------------------------------------------------------------------

COLUMNS = (
    ("server", 14),
    ("network", 8),
    ("load-s", 6),
    ("requests", 8),
    ("failed", 6),
    ("not-200", 7),
    ("lost", 4),
    ("refused", 7),
    ("closed-idle", 11),
    ("slowest-ms", 10),
    ("down-first", 10),
    ("exit-old", 8),
    ("exit-new", 8),
)


def _row(cells: list[str]) -> str:
    return table_row(cells, COLUMNS)


def _code(code: int | None) -> str:
    """As a shell shows it: 128 + N for an exit by signal N."""
    if code is None:
        return "-"
    return str(128 - code if code < 0 else code)


def _codes(replicas: list[Replica]) -> str:
    return ",".join(_code(r.exit_code) for r in replicas)


def _cells(outcome: Outcome) -> list[str]:
    stats, old = outcome.stats, outcome.of_role("old")
    down_first = sum(r.down_while_running is True for r in old)
    return [
        outcome.server,
        outcome.network,
        f"{outcome.seconds:.1f}",
        str(outcome.requests),
        str(outcome.failed),
        str(outcome.not_ok),
        str(stats.lost),
        str(stats.refused),
        str(stats.closed_idle),
        f"{outcome.slowest * 1000:.0f}",
        f"{down_first}/{len(old)}",
        _codes(old),
        _codes(outcome.of_role("new")),
    ]


def _goal(outcome: Outcome) -> str:
    verdict = "met" if outcome.failed == 0 else "NOT MET"
    statuses = ", ".join(
        f"{status} x{count}"
        for status, count in sorted(outcome.stats.statuses.items())
        if status != 200  # noqa: PLR2004 -- HTTP OK
    )
    return (
        f"goal: 0 failed requests: {outcome.server}"
        f" {verdict} ({outcome.failed} failed of {outcome.requests}:"
        f" {outcome.not_ok} not 200{f' ({statuses})' if statuses else ''},"
        f" {outcome.stats.lost} lost, {outcome.stats.refused} refused)"
    )


def report(outcomes: list[Outcome], *, verbose: bool) -> None:
    """Print the table, its legend and the goals."""
    print(_row([name for name, _ in COLUMNS]))
    for outcome in outcomes:
        print(_row(_cells(outcome)))
    print(
        "  load-s: how long the load ran; requests: sent by the clients;\n"
        "  failed = not-200 (HAProxy's 502/503) + lost + refused (connections);\n"
        "  closed-idle: reused connections closed before the request was read\n"
        "  (retried by the client, not failed); slowest-ms: the slowest answer,"
        " any status;\n  down-first: old replicas that HAProxy's stats socket"
        " said DOWN while their\n  process still ran; exit-old, exit-new: each"
        " replica's exit code (128 + N: ended\n  by signal N; uvicorn re-raises"
        " the SIGTERM it stopped on)"
    )
    for outcome in outcomes:
        if verbose:
            for replica in outcome.replicas:
                fate = replica.as_dict()
                print(
                    f"  {outcome.server} {replica.name} ({replica.role},"
                    f" {fate['address']}): DOWN at +{fate['down_after']} s,"
                    f" exit at +{fate['exit_after']} s after SIGTERM; HAProxy:"
                    f" {fate['haproxy']}"
                )
    for outcome in outcomes:
        print(_goal(outcome))


def _versions(program: str) -> str:
    out = subprocess.run(
        [program, "-v"], capture_output=True, text=True, check=False
    ).stdout
    haproxy = out.split("\n", 1)[0].split(" - ")[0]
    names = ("hypercorn", "uvicorn")
    return ", ".join([haproxy, *(f"{n} {metadata.version(n)}" for n in names)])


def run(args: argparse.Namespace, program: str) -> list[Outcome]:
    """Every kind of replica asked for, one after the other; then the report."""
    plan = Plan(
        clients=args.clients,
        warmup=args.warmup,
        settle=args.settle,
        announce_delay=args.announce_delay,
        namespaces=not args.loopback,
        redispatch=args.redispatch,
    )
    retries = (
        "on another server (option redispatch)"
        if plan.redispatch
        else "on the same server only (no option redispatch)"
    )
    print(
        f"fleet bench: Python {sys.version.split()[0]}, {_versions(program)}\n"
        f"  {REPLICAS} replicas behind HAProxy (examples/deploy/haproxy.cfg),"
        f" {plan.clients} keep-alive clients on\n  /work?ms={WORK_MS} through it;"
        f" a rolling update (maxSurge 1) after {plan.warmup:g} s, load until"
        f" {plan.settle:g} s\n  after the last old replica exited."
        f" shutdown-scope: --announce-delay {plan.announce_delay:g}"
        f" --drain-timeout {DRAIN_TIMEOUT:g}\n  HAProxy retries a refused"
        f" connection {retries}",
        flush=True,
    )
    outcomes = []
    for server in args.only or SERVERS:
        with tempfile.TemporaryDirectory(prefix="fleet-") as workdir:
            outcome = anyio.run(rehearse, server, plan, program, Path(workdir))
        outcomes.append(outcome)
    report(outcomes, verbose=args.verbose)
    return outcomes


def _leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside (task groups wrap what their tasks raise)."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def main() -> int:
    """Parse the options and run the bench; 1 if it could not run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="16 clients, short")
    parser.add_argument(
        "--only", action="append", choices=SERVERS, help="this kind (repeatable)"
    )
    parser.add_argument("--clients", type=int, help="keep-alive clients")
    parser.add_argument(
        "--announce-delay", type=float, default=1.0, help="shutdown-scope's (1 s)"
    )
    parser.add_argument("--loopback", action="store_true", help="no network namespaces")
    parser.add_argument(
        "--redispatch", action="store_true", help="HAProxy's option redispatch"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the outcome")
    parser.add_argument(
        "--verbose", action="store_true", help="when each replica was DOWN, exited"
    )
    args = parser.parse_args()
    quick = {"clients": 16, "warmup": 0.3, "settle": 0.3}
    full = {"clients": 32, "warmup": 1.0, "settle": 1.0}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.clients < 1 or args.announce_delay < 0:
        parser.error("--clients must be at least 1, --announce-delay at least 0")
    program = find_haproxy()
    if program is None:
        print(
            "fleet bench: no haproxy program (Debian: apt-get install haproxy)",
            file=sys.stderr,
        )
        return 1
    try:
        outcomes = run(args, program)
    except Exception as error:
        problems = _leaves(error)
        if not all(isinstance(p, (BenchError, HAProxyError)) for p in problems):
            raise
        for problem in problems:
            print(f"fleet bench: {problem}", file=sys.stderr)
        return 1
    if args.json:
        data = [outcome.as_dict() for outcome in outcomes]
        Path(args.json).write_text(json.dumps(data, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
