"""The rehearsal of bench/fleet.py: one rolling update of replicas under load.

Three old replicas behind HAProxy; under steady load through it, the update
goes as a Deployment's with ``maxSurge: 1, maxUnavailable: 0`` (a new one UP,
then an old one gets SIGTERM); the load runs on for a while after, then the new
ones get SIGTERM. The outcome holds the load's stats and each replica's fate.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from _haproxy import HAProxy, open_haproxy
from _netns import Place, free_port_below_ephemeral, open_places
from _replicas import (
    CANCEL_TIMEOUT,
    DRAIN_TIMEOUT,
    Replica,
    kill_tree,
    start_replica,
    stop_replica,
    wait_slots_down,
    wait_up,
)
from http_load import LoadStats, run_load

__all__ = ["REPLICAS", "SERVERS", "WORK_MS", "Outcome", "Plan", "rehearse"]

SERVERS = ("shutdown-scope", "uvicorn")
REPLICAS = 3
WORK_MS = 20
# Of `show stat`: responses 2xx, connection errors, retries (HAProxy's names).
COUNTERS = ("hrsp_2xx", "econ", "wretr")


@dataclasses.dataclass(frozen=True)
class Plan:
    """The load and the timing of the update."""

    clients: int
    warmup: float
    settle: float
    announce_delay: float
    namespaces: bool
    redispatch: bool

    @property
    def exit_timeout(self) -> float:
        """Past this after its SIGTERM, a replica is killed (and the bench fails)."""
        return self.announce_delay + DRAIN_TIMEOUT + CANCEL_TIMEOUT + 10


@dataclasses.dataclass
class Outcome:
    """What one kind of replica did under the rolling update."""

    server: str
    network: str
    redispatch: bool
    stats: LoadStats
    seconds: float  # how long the load ran
    replicas: list[Replica]

    @property
    def not_ok(self) -> int:
        """Answers other than 200."""
        return self.stats.answered - self.stats.statuses.get(200, 0)

    @property
    def failed(self) -> int:
        """Requests answered with another status than 200 or lost; refusals."""
        return self.not_ok + self.stats.lost + self.stats.refused

    @property
    def requests(self) -> int:
        """Requests the clients sent."""
        return self.stats.answered + self.stats.lost + self.stats.closed_idle

    @property
    def slowest(self) -> float:
        """The longest a request took to be answered (any status), in seconds."""
        return max(self.stats.latencies, default=0.0)

    def of_role(self, role: str) -> list[Replica]:
        """The old or the new replicas, in order."""
        return [r for r in self.replicas if r.role == role]

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe."""
        stats = self.stats
        return {
            "server": self.server,
            "network": self.network,
            "redispatch": self.redispatch,
            "seconds": round(self.seconds, 3),
            "requests": self.requests,
            "answered": stats.answered,
            "failed": self.failed,
            "not_200": self.not_ok,
            "statuses": {str(k): v for k, v in sorted(stats.statuses.items())},
            "lost": stats.lost,
            "resets": stats.resets,
            "refused": stats.refused,
            "closed_idle": stats.closed_idle,
            "slowest": round(self.slowest, 4),
            "replicas": [r.as_dict() for r in self.replicas],
        }


async def _update_under_load(
    server: str, plan: Plan, haproxy: HAProxy, places: list[Place], workdir: Path
) -> tuple[LoadStats, float, list[Replica]]:
    replicas: list[Replica] = []

    async def stop(replica: Replica) -> None:
        await stop_replica(haproxy, replica, kill_after=plan.exit_timeout)

    async def start(n: int, role: str) -> Replica:
        name = f"replica{n + 1}"
        replica = await start_replica(
            server,
            name,
            role=role,
            place=places[n],
            announce_delay=plan.announce_delay,
            workdir=workdir,
        )
        replicas.append(replica)
        return replica

    try:
        old = [await start(n, "old") for n in range(REPLICAS)]
        await wait_up(haproxy, old)
        new_names = [f"replica{n + 1}" for n in range(REPLICAS, 2 * REPLICAS)]
        await wait_slots_down(haproxy, new_names)
        stats, going = LoadStats(), [True]
        url = f"http://{haproxy.frontend}/work?ms={WORK_MS}"
        started = time.monotonic()
        async with anyio.create_task_group() as load:
            load.start_soon(
                functools.partial(
                    run_load, url, clients=plan.clients, stats=stats,
                    while_=lambda: bool(going),
                )
            )  # fmt: skip
            await anyio.sleep(plan.warmup)
            # maxSurge 1, maxUnavailable 0: a new one UP, then an old one goes.
            async with anyio.create_task_group() as stopping:
                for n in range(REPLICAS):
                    new = await start(REPLICAS + n, "new")
                    await wait_up(haproxy, [new])
                    stopping.start_soon(stop, old[n])
            await anyio.sleep(plan.settle)
            going.clear()
        seconds = time.monotonic() - started
        async with anyio.create_task_group() as stopping:
            for replica in replicas[REPLICAS:]:
                stopping.start_soon(stop, replica)
        servers = await haproxy.servers()
        for replica in replicas:
            row = servers[replica.name]
            replica.counters = {key: int(row[key] or 0) for key in COUNTERS}
    finally:
        for replica in replicas:
            if replica.process.returncode is None:
                kill_tree(replica.process.pid)
    return stats, seconds, replicas


async def rehearse(server: str, plan: Plan, program: str, workdir: Path) -> Outcome:
    """One rolling update of ``server`` replicas under load; the outcome."""
    with open_places(2 * REPLICAS, namespaces=plan.namespaces) as made:
        if made.note:
            print(f"  {server}: {made.note}; loopback addresses instead", flush=True)
        frontend = f"127.0.0.1:{free_port_below_ephemeral()}"
        check = "/readyz" if server == "shutdown-scope" else "/work?ms=0"
        async with open_haproxy(
            program,
            frontend=frontend,
            replicas=[place.address for place in made.places],
            check_path=check,
            redispatch=plan.redispatch,
            workdir=workdir,
        ) as haproxy:
            stats, seconds, replicas = await _update_under_load(
                server, plan, haproxy, made.places, workdir
            )
        return Outcome(server, made.kind, plan.redispatch, stats, seconds, replicas)
