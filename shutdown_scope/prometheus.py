"""Prometheus metrics of a graceful scope: ``ScopeCollector``.

Needs prometheus_client: ``pip install "shutdown-scope[prometheus]"``. The core
never imports this module; a collector reads a scope through its public,
read-only properties whenever the registry is scraped, from any thread::

    from prometheus_client import REGISTRY, start_http_server
    from shutdown_scope.prometheus import ScopeCollector

    async with graceful_scope() as scope:
        REGISTRY.register(ScopeCollector(scope))
        start_http_server(9100)
        ...

For ``shutdown-scope run``'s reloads, see ``--metrics-file`` (no
prometheus_client in the launcher: a file for node_exporter's textfile
collector).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import get_args

from shutdown_scope import Phase, ServiceOutcome, ShutdownScope
from shutdown_scope._extras import missing_extra

try:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector
except ModuleNotFoundError as _missing:
    raise missing_extra(_missing, "prometheus") from _missing

__all__ = ["ScopeCollector"]


class ScopeCollector(Collector):
    """The metrics of one ``graceful_scope``, read from it at each scrape.

    While it runs:

    * ``shutdown_scope_phase{phase}``: 1 for the scope's phase, 0 for the others;
    * ``shutdown_scope_ready``: 1 until the shutdown begins (readiness);
    * ``shutdown_scope_in_flight{service}``: work in flight per service (and
      the body's own, as ``body``);
    * ``shutdown_scope_signals_received_total``: shutdown signals received.

    Once the scope has exited, from its report:

    * ``shutdown_scope_shutdown_duration_seconds``: trigger to end;
    * ``shutdown_scope_shutdown_clean``: 1 if nothing in flight was lost;
    * ``shutdown_scope_shutdown_exit_code``: the code ``run()`` exits with;
    * ``shutdown_scope_cancelled_in_flight``: units of work cancelled (lost);
    * ``shutdown_scope_service_outcome{service,outcome}``: 1 for how each
      service ended, 0 for the other outcomes.

    Args:
        scope: the scope (from ``async with graceful_scope() as scope``).
        namespace: the prefix of every metric name.
        labels: constant labels added to every sample (``{"app": "api"}``).
    """

    def __init__(
        self,
        scope: ShutdownScope,
        *,
        namespace: str = "shutdown_scope",
        labels: Mapping[str, str] | None = None,
    ) -> None:
        if not isinstance(scope, ShutdownScope):
            msg = f"ScopeCollector needs a ShutdownScope, not {scope!r}"
            raise TypeError(msg)
        if not isinstance(namespace, str) or not namespace.isidentifier():
            msg = (
                f"namespace must be a metric name prefix like 'app', not {namespace!r}"
            )
            raise ValueError(msg)
        self._scope = scope
        self._prefix = namespace
        self._labels = dict(labels or {})
        for name, value in self._labels.items():
            if not (isinstance(name, str) and name.isidentifier()):
                msg = f"label names must be identifiers, not {name!r}"
                raise ValueError(msg)
            if not isinstance(value, str):
                msg = f"label {name!r} must be a str, not {value!r}"
                raise TypeError(msg)

    def _gauge(
        self, name: str, text: str, labels: Iterable[str] = ()
    ) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            f"{self._prefix}_{name}", text, labels=[*self._labels, *labels]
        )

    def _add(
        self,
        metric: GaugeMetricFamily | CounterMetricFamily,
        value: float,
        *labels: str,
    ) -> None:
        metric.add_metric([*self._labels.values(), *labels], value)

    def collect(self) -> Iterator[Metric]:
        """The scope's metrics now (called by the registry at each scrape)."""
        scope = self._scope
        phase = scope.phase
        current = self._gauge("phase", "1 for the scope's phase.", ["phase"])
        for each in Phase:
            self._add(current, float(each == phase), each.name)
        yield current
        ready = self._gauge("ready", "1 until the shutdown begins.")
        self._add(ready, float(scope.token.ready))
        yield ready
        in_flight = self._gauge(
            "in_flight", "Units of work in flight, by service.", ["service"]
        )
        for service, count in scope.in_flight_by_service().items():
            self._add(in_flight, count, service)
        yield in_flight
        signals = CounterMetricFamily(
            f"{self._prefix}_signals_received",
            "Shutdown signals received.",
            labels=list(self._labels),
        )
        self._add(signals, scope.signals_received)
        yield signals
        if phase == Phase.DONE:
            yield from self._outcome()

    def _outcome(self) -> Iterator[Metric]:
        report = self._scope.report
        for name, text, value in (
            (
                "shutdown_duration_seconds",
                "From the trigger to the end.",
                report.duration,
            ),
            ("shutdown_clean", "1 if nothing in flight was lost.", float(report.clean)),
            ("shutdown_exit_code", "The exit code of run().", report.exit_code),
            (
                "cancelled_in_flight",
                "Units of work cancelled in flight (lost).",
                len(report.cancelled_in_flight),
            ),
        ):
            metric = self._gauge(name, text)
            self._add(metric, value)
            yield metric
        outcome = self._gauge(
            "service_outcome", "1 for how each service ended.", ["service", "outcome"]
        )
        for service in report.services:
            for each in get_args(ServiceOutcome):
                self._add(outcome, float(service.outcome == each), service.name, each)
        yield outcome
