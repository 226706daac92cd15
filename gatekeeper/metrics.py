"""Prometheus metrics with bounded labels (outcome, reason: never a key or a tenant).

Label children are bound once at startup, so recording a decision is a dict lookup and two
lock-guarded increments. Each Gatekeeper gets its own registry unless given one, so several
instances (tests, sub-apps) never collide.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_asgi_app

from gatekeeper.reasons import OK, REFUSALS, Reason
from gatekeeper.types import ASGIApp, Receive, Scope, Send

# The time gatekeeper adds is microseconds when cached, milliseconds on a store miss.
LATENCY_BUCKETS = (5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3,
                   10e-3, 25e-3, 100e-3)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.decisions = Counter(
            "gatekeeper_decisions", "Decisions on protected requests, by outcome and reason.",
            ("outcome", "reason"), registry=self.registry)
        self.added_latency = Histogram(
            "gatekeeper_added_latency_seconds",
            "Time gatekeeper spent deciding, before the app was called or the refusal sent.",
            ("outcome",), buckets=LATENCY_BUCKETS, registry=self.registry)
        self.policy_tenants = Gauge(
            "gatekeeper_policy_tenants", "Tenants in the active policy.", registry=self.registry)
        self._counts = {r: self.decisions.labels("allow" if r is OK else "refuse", r.code)
                        for r in (OK, *REFUSALS)}
        self._allowed_latency = self.added_latency.labels("allow")
        self._refused_latency = self.added_latency.labels("refuse")

    def record(self, reason: Reason, seconds: float) -> None:
        self._counts[reason].inc()
        (self._allowed_latency if reason is OK else self._refused_latency).observe(seconds)

    def asgi_app(self) -> ASGIApp:
        """An ASGI app serving this registry, for ``Route("/metrics", metrics.asgi_app())``."""
        return _MetricsApp(make_asgi_app(self.registry))


class _MetricsApp:
    """An object, not a function: Starlette's Route then serves it as an ASGI app."""

    __slots__ = ("_app",)

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)
