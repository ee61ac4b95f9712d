"""shutdown_scope.prometheus: a real CollectorRegistry read during a real scope."""

from __future__ import annotations

import signal

import anyio
import anyio.to_thread
import pytest
from anyio.abc import TaskStatus
from prometheus_client import CollectorRegistry, generate_latest

from shutdown_scope import Phase, ShutdownToken, graceful_scope
from shutdown_scope.prometheus import ScopeCollector
from shutdown_scope.testing import drive_to, graceful_test_scope

pytestmark = pytest.mark.anyio

LABELS = {"app": "api"}


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, {**LABELS, **labels})


def phases(registry: CollectorRegistry) -> dict[str, float | None]:
    return {
        p.name: value(registry, "shutdown_scope_phase", phase=p.name) for p in Phase
    }


async def test_phases_in_flight_and_outcome_as_the_scope_runs() -> None:
    release = anyio.Event()

    async def worker(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        with token.in_flight("job"), token.in_flight("job"):
            task_status.started()
            await release.wait()

    registry = CollectorRegistry()
    async with graceful_test_scope(drain_timeout=30) as scope:
        registry.register(ScopeCollector(scope, labels=LABELS))
        await scope.start(worker)
        with scope.token.in_flight("body work"):
            running = phases(registry)
            assert value(registry, "shutdown_scope_in_flight", service="body") == 1
        assert value(registry, "shutdown_scope_ready") == 1
        assert value(registry, "shutdown_scope_in_flight", service="worker") == 2
        assert value(registry, "shutdown_scope_in_flight", service="body") == 0
        assert value(registry, "shutdown_scope_shutdown_clean") is None  # not yet
        # A scrape from the exporter's thread, as prometheus_client's server
        # does (while RUNNING: no deadline for virtual time to jump to).
        text = await anyio.to_thread.run_sync(generate_latest, registry)
        assert await drive_to(scope, Phase.DRAINING) == Phase.DRAINING
        draining = phases(registry)
        assert value(registry, "shutdown_scope_ready") == 0
        assert value(registry, "shutdown_scope_in_flight", service="worker") == 2
        release.set()
    assert running == {p.name: float(p == Phase.RUNNING) for p in Phase}
    assert draining == {p.name: float(p == Phase.DRAINING) for p in Phase}
    assert b'shutdown_scope_phase{app="api",phase="RUNNING"} 1.0' in text
    assert b'shutdown_scope_in_flight{app="api",service="worker"} 2.0' in text
    assert phases(registry) == {p.name: float(p == Phase.DONE) for p in Phase}
    assert value(registry, "shutdown_scope_in_flight", service="worker") == 0
    assert value(registry, "shutdown_scope_shutdown_clean") == 1
    assert value(registry, "shutdown_scope_shutdown_exit_code") == 0
    assert value(registry, "shutdown_scope_cancelled_in_flight") == 0
    duration = value(registry, "shutdown_scope_shutdown_duration_seconds")
    assert duration == scope.report.duration
    outcome = "shutdown_scope_service_outcome"
    assert value(registry, outcome, service="worker", outcome="returned") == 1
    assert value(registry, outcome, service="worker", outcome="cancelled") == 0


async def test_lost_work_shows_in_the_outcome() -> None:
    async def worker(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        with token.in_flight("job"):
            task_status.started()
            await anyio.sleep_forever()

    registry = CollectorRegistry()
    async with graceful_test_scope(drain_timeout=1, cancel_timeout=1) as scope:
        registry.register(ScopeCollector(scope, labels=LABELS))
        await scope.start(worker)
        scope.request_shutdown()
    assert value(registry, "shutdown_scope_shutdown_clean") == 0
    assert value(registry, "shutdown_scope_shutdown_exit_code") == 1
    assert value(registry, "shutdown_scope_cancelled_in_flight") == 1
    outcome = "shutdown_scope_service_outcome"
    assert value(registry, outcome, service="worker", outcome="cancelled") == 1


async def test_signals_received_are_counted() -> None:
    registry = CollectorRegistry()
    async with graceful_scope(signals=(signal.SIGUSR2,), hard_exit=False) as scope:
        collector = ScopeCollector(scope, namespace="app")
        registry.register(collector)
        assert registry.get_sample_value("app_signals_received_total") == 0
        with anyio.fail_after(5):
            signal.raise_signal(signal.SIGUSR2)
            await scope.token.wait_phase(Phase.STOPPING)
        assert registry.get_sample_value("app_signals_received_total") == 1
    assert registry.get_sample_value("app_signals_received_total") == 1
    assert scope.report.signals_received == 1


@pytest.mark.parametrize(
    ("args", "options", "error", "match"),
    [
        (("scope",), {}, TypeError, "needs a ShutdownScope"),
        ((None,), {"namespace": "my app"}, ValueError, "namespace must be"),
        ((None,), {"namespace": ""}, ValueError, "namespace must be"),
        ((None,), {"labels": {"a-b": "x"}}, ValueError, "identifiers"),
        ((None,), {"labels": {"a": 1}}, TypeError, "must be a str"),
    ],
)
async def test_bad_arguments(
    args: tuple[object, ...], options: dict[str, object], error: type, match: str
) -> None:
    async with graceful_test_scope() as scope:
        given = [scope if a is None else a for a in args]
        with pytest.raises(error, match=match):
            ScopeCollector(*given, **options)  # type: ignore[arg-type]
        scope.request_shutdown()
