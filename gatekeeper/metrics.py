"""Prometheus metrics with bounded labels (outcome, reason: never a key or a tenant).

The hot path records into plain Python lists (an index and two additions, well under a
microsecond); a collector turns them into Prometheus families only when ``/metrics`` is
scraped. prometheus_client's own Counter and Histogram take a lock per call and cost several
microseconds per decision. Recording happens on the event loop thread, so no lock is needed.
Each Gatekeeper gets its own registry unless given one, so instances never collide.

Names follow Prometheus' conventions: base units (seconds), ``_total`` on counters, ``_info``
on info metrics, labels from closed sets (outcome, reason code). The policy metrics are set
off the hot path, at load and reload, through ``policy_loaded`` / ``policy_reloaded`` /
``policy_reload_failed``: an SRE sees which policy each process runs (its fingerprint), when
it last changed, and whether a reload was refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Info,
    generate_latest,
    make_asgi_app,
)
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from gatekeeper.compiled import interpreted
from gatekeeper.metrics_shared import SharedExport, shared_directory
from gatekeeper.policy.canonical import fingerprint
from gatekeeper.policy.model import Policy
from gatekeeper.policy.notify import EVENTS
from gatekeeper.reasons import OK, REFUSALS, Reason
from gatekeeper.types import ASGIApp, Receive, Scope, Send

# The time gatekeeper adds is microseconds when cached, milliseconds on a store miss.
LATENCY_BUCKETS: Final[tuple[float, ...]] = (
    5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 100e-3)
"""A tuple of any length to the compiler: a fixed-length one is a C struct, boxed into a
new tuple of new floats at every loop over it (``Metrics.record``, per request)."""
_REASONS = (OK, *REFUSALS)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.decisions = [0] * len(_REASONS)
        """Decision counts by reason, in ``(OK, *REFUSALS)`` order."""
        # per outcome (0 allow, 1 refuse): counts per bucket (the last is +Inf), then the sum
        self.latency = [[0] * (len(LATENCY_BUCKETS) + 1) for _ in range(2)]
        self.latency_sum = [0.0, 0.0]
        self.registry.register(_DecisionCollector(self))
        self.policy_tenants = Gauge(
            "gatekeeper_policy_tenants", "Tenants in the active policy.", registry=self.registry)
        self.policy_info = Info(
            "gatekeeper_policy", "The active policy's fingerprint (16 hex digits of SHA-256 "
            "over the compiled policy): equal on every process that runs the same policy.",
            registry=self.registry)
        self.policy_reloads = Counter(
            "gatekeeper_policy_reloads", "Policy reloads that were swapped in.",
            registry=self.registry)
        self.policy_reload_errors = Counter(
            "gatekeeper_policy_reload_errors",
            "Policy reloads refused (invalid policy, or a change that needs a restart); the "
            "previous policy kept running.", registry=self.registry)
        self.policy_last_reload_successful = Gauge(
            "gatekeeper_policy_last_reload_successful",
            "1 when the last load or reload of the policy succeeded, 0 when it was refused.",
            registry=self.registry)
        self.policy_last_reload_success = Gauge(
            "gatekeeper_policy_last_reload_success_timestamp_seconds",
            "Unix time the running policy was loaded or last reloaded.", registry=self.registry)
        self.resale_actions = Counter(
            "gatekeeper_resale_actions",
            "Requests whose key's resale score asked for an action (flag, throttle, block, "
            "suspend), in shadow as in enforce mode.", ["action"], registry=self.registry)
        self.store_fail_open = Gauge(
            "gatekeeper_store_fail_open",
            "1 while the counter store fails and on_store_error: fail_open counts limits in "
            "this process only; 0 otherwise.", registry=self.registry)
        self.flagged = Counter(
            "gatekeeper_flagged",
            "Allowed requests marked by a signal (action: flag), once per decision record (a "
            "credential and client within keys.cache_ttl), not per request.",
            registry=self.registry)
        self.webhooks = Counter(
            "gatekeeper_webhooks",
            "Owner webhooks by event and result: delivered (2xx), failed (refused or out of "
            "attempts), dropped (queue full, target removed, or shutdown).",
            ("event", "result"), registry=self.registry)
        for event in EVENTS:
            for result in ("delivered", "failed", "dropped"):
                self.webhooks.labels(event, result)
        self.audit_stream = Counter(
            "gatekeeper_audit_stream_entries",
            "Audit lines for the Redis audit stream: written, or dropped (buffer full, Redis "
            "failing, or shutdown).", ("result",), registry=self.registry)
        for result in ("written", "dropped"):
            self.audit_stream.labels(result)
        Info("gatekeeper_build", "The gatekeeper version serving, and whether its request "
             "path is compiled.", registry=self.registry).info(
            {"version": _version(), "compiled": "false" if interpreted() else "true"})
        directory = shared_directory()
        self.shared = None if directory is None else SharedExport(
            self.decisions, self.latency, self.latency_sum, LATENCY_BUCKETS, directory)
        """Set under ``PROMETHEUS_MULTIPROC_DIR``: every worker's counts in one scrape."""

    def record(self, reason: Reason, seconds: float) -> None:
        self.decisions[reason.index] += 1
        outcome = 0 if reason is OK else 1
        bucket = 0  # bisect_left, written out: compiled, a call into bisect costs more
        for bound in LATENCY_BUCKETS:
            if seconds <= bound:
                break
            bucket += 1
        self.latency[outcome][bucket] += 1
        self.latency_sum[outcome] += seconds

    def resale_action(self, action: str) -> None:
        self.resale_actions.labels(action).inc()

    def policy_loaded(self, policy: Policy, now: float) -> None:
        """At startup: which policy runs and since when."""
        self.policy_tenants.set(len(policy.tenants))
        self.policy_info.info({"fingerprint": fingerprint(policy)})
        self.policy_last_reload_success.set(now)
        self.policy_last_reload_successful.set(1)

    def policy_reloaded(self, policy: Policy, now: float) -> None:
        """After a reload swapped ``policy`` in."""
        self.policy_loaded(policy, now)
        self.policy_reloads.inc()

    def policy_reload_failed(self) -> None:
        """After a reload was refused; the running policy's metrics stay as they were."""
        self.policy_reload_errors.inc()
        self.policy_last_reload_successful.set(0)

    def asgi_app(self) -> ASGIApp:
        """An ASGI app serving this registry, for ``Route("/metrics", metrics.asgi_app())``;
        under ``PROMETHEUS_MULTIPROC_DIR``, every worker's metrics whichever one answers."""
        if self.shared is not None:
            return _MetricsApp(_SharedApp(self.shared, self.registry))
        return _MetricsApp(make_asgi_app(self.registry))


class _MetricsApp:
    """An object, not a function: Starlette's Route then serves it as an ASGI app."""

    __slots__ = ("_app",)

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


class _SharedApp:
    """``/metrics`` in multiprocess mode: the shared files, plus this process's info metrics
    (prometheus_client keeps ``Info`` in process memory only)."""

    def __init__(self, shared: SharedExport, registry: CollectorRegistry) -> None:
        self._shared = shared
        self._registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        infos = [m for m in self._registry.collect() if m.type == "info"]
        body = self._shared.exposition() + b"".join(
            generate_latest(_Fixed(m)) for m in infos)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode())]})
        await send({"type": "http.response.body", "body": body})


class _Fixed(Collector):
    def __init__(self, metric: Metric) -> None:
        self._metric = metric

    def collect(self) -> Iterator[Metric]:
        yield self._metric


class _DecisionCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        decisions = CounterMetricFamily(
            "gatekeeper_decisions", "Decisions on protected requests, by outcome and reason.",
            labels=("outcome", "reason"))
        for reason, count in zip(_REASONS, self._m.decisions, strict=True):
            decisions.add_metric(("allow" if reason is OK else "refuse", reason.code), count)
        yield decisions
        latency = HistogramMetricFamily(
            "gatekeeper_added_latency_seconds",
            "Time gatekeeper spent deciding, before the app was called or the refusal sent.",
            labels=("outcome",))
        bounds = [str(b) for b in LATENCY_BUCKETS] + ["+Inf"]
        for outcome, counts, total in zip(("allow", "refuse"), self._m.latency,
                                          self._m.latency_sum, strict=True):
            cumulative, buckets = 0, []
            for bound, count in zip(bounds, counts, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            latency.add_metric((outcome,), buckets, total)
        yield latency


def _version() -> str:
    try:
        return version("gatekeeper")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"
