"""The scenarios hot_path.py times, and the checks that each does what it says.

Every scenario has a baseline measured in the same round (``None`` for the baselines
themselves): Starlette scenarios pair with ``bare``, the trivial-app ones with ``trivial``,
``gk-public-path`` with ``bare-healthz``. Each gatekeeper scenario has its own
``Gatekeeper``, memory store and default ``Metrics()`` (recording is part of the cost).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import jwt

import gatekeeper
from benchmarks.apps import (
    CHAT_PATH,
    CLIENT,
    COUNTRY_RULE,
    FULL_TENANT,
    FULL_TOP,
    HIGH,
    JWT_AUDIENCE,
    JWT_ISSUER,
    JWT_SECRET,
    JWT_SECRET_ENV,
    KEY_NETWORKS,
    LIMITS_RT,
    LIMITS_RTC,
    PEPPER,
    POLICY,
    SLOWAPI_LIMIT,
    TENANT,
    WRONG_CLIENT,
    ASGIApp,
    Calls,
    PassThrough,
    TrivialApp,
    make_app,
    make_scope,
    make_slowapi_app,
)
from benchmarks.driver import CheckFailed, probe
from gatekeeper import key_admin

GARBAGE_KEY = "gk_" + "A" * 50
"""The shape of a key (prefix, length, alphabet) with a checksum that fails."""
FORGED_KEY = gatekeeper.build_key("ZZZZZZZZZZZZ", "f" * 32)
"""A valid checksum (anyone can compute one) on a key id the store does not hold."""


@dataclass
class Scenario:
    name: str
    what: str
    app: ASGIApp
    scope: dict[str, Any]
    status: int
    calls: Calls
    baseline: str | None
    """The scenario this one is paired with, round by round; None for a baseline."""
    reason: str | None = None
    """The refusal code the body must carry; None for allowed requests."""
    gk: gatekeeper.Gatekeeper | None = None
    reference: bool = False
    """A reference row, not one of the compared setups."""
    us: list[float] = field(default_factory=list)
    """Microseconds per request, one value per round."""
    requests: int = 0
    """Requests sent to this scenario in total (probes, warm-up and timing)."""

    @property
    def allowed(self) -> bool:
        return self.status < 400


def audit_sink() -> logging.Logger:
    """An INFO logger that formats each audit line and drops it: the cost, without the I/O."""
    logger = logging.getLogger("benchmark.audit")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    return logger


def benchmark_policy(limits: dict[str, Any] | None = None,
                     countries: dict[str, Any] | None = None,
                     full: bool = False) -> gatekeeper.Policy:
    """POLICY compiled, the tenant given ``limits`` and a ``countries`` rule when set (``full``:
    ``FULL``'s); its JWT issuer's secret is read from the environment, set here."""
    os.environ.setdefault(JWT_SECRET_ENV, JWT_SECRET)
    tenant = dict(POLICY["tenants"][TENANT])
    extra: dict[str, Any] = {}
    if full:
        tenant |= FULL_TENANT
        extra = FULL_TOP
    if limits is not None:
        tenant["limits"] = limits
    if countries is not None:
        tenant["countries"] = countries
    return gatekeeper.compile_policy(POLICY | extra | {"tenants": {TENANT: tenant}},
                                     "benchmark policy")



async def credential_for(kind: str | None, store: gatekeeper.MemoryStore,
                         policy: gatekeeper.Policy, now: float) -> str | None:
    """"key": a new API key of the tenant, bound to KEY_NETWORKS; "jwt": an HS256 token of
    the benchmark issuer; anything else is sent as it is."""
    if kind == "key":
        token, _ = await key_admin.create_key(store, PEPPER, policy, TENANT, now,
                                              networks=KEY_NETWORKS)
        return token
    if kind == "jwt":
        return jwt.encode({"iss": JWT_ISSUER, "aud": JWT_AUDIENCE, "sub": "bench-user",
                           "tenant": TENANT, "iat": int(now), "exp": int(now) + 86_400},
                          JWT_SECRET, algorithm="HS256")
    return kind


class ForgetDecisions:
    """Drops every decision record before each request: every request takes the miss path
    (facts, a cached key, decide, the geo stage, remember), as the first request of a client
    within ``keys.cache_ttl`` does."""

    def __init__(self, gk: gatekeeper.Gatekeeper) -> None:
        self.gk = gk

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.gk.runtime.decisions.clear()
        await self.gk(scope, receive, send)


async def gatekeeper_scenario(name: str, what: str, *, path: str = CHAT_PATH,
                              method: str = "POST", client: tuple[str, int] = CLIENT,
                              credential: str | None = "key", status: int = 200,
                              reason: str | None = None, audit: bool = False,
                              trivial: bool = False, baseline: str = "bare",
                              limits: dict[str, Any] | None = None, countries: bool = False,
                              miss: bool = False, full: bool = False) -> Scenario:
    """``limits``: the tenant's limits; ``countries``: the tenant has a country rule;
    ``miss``: no decision record is reused; ``full``: the full policy (``FULL_TENANT``)."""
    policy = benchmark_policy(limits, COUNTRY_RULE if countries else None, full)
    store = gatekeeper.MemoryStore()
    calls = Calls()
    inner: ASGIApp = TrivialApp(calls) if trivial else make_app(calls)
    gk = gatekeeper.Gatekeeper(inner, policy, store=store, pepper=PEPPER,
                               audit=gatekeeper.AuditLog(audit_sink()) if audit else None)
    token = await credential_for(credential, store, policy, time.time())
    app: ASGIApp = ForgetDecisions(gk) if miss else gk
    return Scenario(name, what, app, make_scope(method, path, client, token), status, calls,
                    baseline, reason, gk)


def plain(name: str, what: str, app: ASGIApp, calls: Calls, baseline: str | None, *,
          method: str = "POST", path: str = CHAT_PATH, reference: bool = False) -> Scenario:
    return Scenario(name, what, app, make_scope(method, path, CLIENT, None), 200, calls,
                    baseline, reference=reference)


async def build_scenarios() -> list[Scenario]:
    c = [Calls() for _ in range(7)]
    valid = "a valid key from the key's network (cached), tenant and key networks checked"
    return [
        plain("bare", "bare Starlette app, POST /v1/chat/completions", make_app(c[0]), c[0],
              None),
        plain("noop-middleware", "the app behind a do-nothing pure-ASGI middleware",
              PassThrough(make_app(c[1])), c[1], "bare"),
        plain("slowapi", f"slowapi decorator, one in-memory limit ({SLOWAPI_LIMIT}) keyed by "
              "remote address", make_slowapi_app(c[2]), c[2], "bare"),
        await gatekeeper_scenario("gk-api-key", f"gatekeeper, {valid}"),
        await gatekeeper_scenario(
            "gk-one-limit", "gk-api-key with one per-key request limit (what slowapi has): "
            "x-ratelimit headers added", limits={"requests": HIGH}),
        await gatekeeper_scenario(
            "gk-limits", "gk-api-key with per-key request and token limits charged (memory "
            "store), x-ratelimit headers added, tokens reconciled from the JSON usage",
            limits=LIMITS_RT),
        await gatekeeper_scenario(
            "gk-limits-concurrency", "gk-limits plus a concurrency limit: a slot taken and "
            "released per request", limits=LIMITS_RTC),
        await gatekeeper_scenario(
            "gk-full-policy", "the full policy: key, tenant and network binding, a country "
            "rule, the model allowed by the request policy, request + token + concurrency "
            "limits per key and request + token per tenant, the resale score (shadow)",
            full=True),
        plain("slowapi-headers", f"slowapi with its rate-limit headers on (X-RateLimit-*, "
              f"what gatekeeper's limits send), one in-memory limit ({SLOWAPI_LIMIT})",
              make_slowapi_app(c[6], headers=True), c[6], "bare"),
        await gatekeeper_scenario(
            "gk-jwt", "gatekeeper, a valid HS256 JWT (verified once, then cached)",
            credential="jwt"),
        await gatekeeper_scenario(
            "gk-country", f"gatekeeper, {valid}, the tenant with a country rule (decision "
            "record reused: the rule was checked once)", countries=True),
        await gatekeeper_scenario(
            "gk-miss", f"gatekeeper, {valid}, every request a decision-record miss",
            miss=True),
        await gatekeeper_scenario(
            "gk-country-miss", "gk-miss with the tenant's country rule: the geo stage on every "
            "request (cached lookup, embedded default)", countries=True, miss=True),
        await gatekeeper_scenario(
            "gk-garbage-key", "gatekeeper refusing a key whose checksum fails (401)",
            credential=GARBAGE_KEY, status=401, reason="credential_malformed"),
        await gatekeeper_scenario(
            "gk-wrong-network", "gatekeeper refusing a valid key from outside its network (403)",
            client=WRONG_CLIENT, status=403, reason="network_not_allowed"),
        await gatekeeper_scenario(
            "gk-forged-key", "gatekeeper refusing a well-formed key with an unknown id (401)",
            credential=FORGED_KEY, status=401, reason="key_unknown"),
        await gatekeeper_scenario(
            "gk-wrong-network-audited", "gk-wrong-network with its audit line written (to a "
            "logging.NullHandler at INFO)", client=WRONG_CLIENT, status=403,
            reason="network_not_allowed", audit=True),
        await gatekeeper_scenario(
            "gk-public-path", "gatekeeper in front of an unprotected path, GET /healthz",
            path="/healthz", method="GET", credential=None, baseline="bare-healthz"),
        plain("bare-healthz", "reference: bare app, GET /healthz (the baseline of "
              "gk-public-path)", make_app(c[3]), c[3], "bare", method="GET", path="/healthz",
              reference=True),
        plain("trivial", "the do-nothing inner app alone: sends 200 with an empty body",
              TrivialApp(c[4]), c[4], None),
        plain("noop-over-trivial", "the do-nothing middleware over the trivial app",
              PassThrough(TrivialApp(c[5])), c[5], "trivial"),
        await gatekeeper_scenario(
            "gk-over-trivial", f"gatekeeper over the trivial app, {valid}", trivial=True,
            baseline="trivial"),
    ]


async def check(s: Scenario, when: str) -> None:
    before = s.calls.count
    status, body = await probe(s.app, s.scope)
    s.requests += 1
    if status != s.status:
        raise CheckFailed(f"{s.name} ({when}): status {status}, expected {s.status}: "
                          f"{body[:200]!r}")
    if s.reason is not None and f'"code":"{s.reason}"'.encode() not in body:
        raise CheckFailed(f"{s.name} ({when}): body lacks code {s.reason!r}: {body[:200]!r}")
    if s.calls.count - before != (1 if s.allowed else 0):
        raise CheckFailed(f"{s.name} ({when}): app calls went {before} -> {s.calls.count}")


async def check_slowapi_driver() -> str:
    """The driver really exercises slowapi: a 3/minute limit refuses the 4th request."""
    calls = Calls()
    app = make_slowapi_app(calls, limit="3/minute")
    scope = make_scope("POST", CHAT_PATH, CLIENT, None)
    statuses = [(await probe(app, scope))[0] for _ in range(4)]
    if statuses != [200, 200, 200, 429] or calls.count != 3:
        raise CheckFailed(f"slowapi driver check: statuses {statuses}, app calls {calls.count}")
    return "slowapi: under a 3/minute limit the same driver got 200, 200, 200, 429"


def final_checks(scenarios: list[Scenario]) -> list[str]:
    """Every request of every scenario did what it should: app calls, metrics, one JWT
    verification. Returns one line per check, for the report."""
    lines = []
    for s in scenarios:
        expected = s.requests if s.allowed else 0
        if s.calls.count != expected:
            raise CheckFailed(f"{s.name}: app called {s.calls.count} times, expected {expected}")
        if s.allowed:
            lines.append(f"{s.name}: {s.requests} requests, all {s.status}, "
                         f"app called {s.calls.count} times")
        else:
            lines.append(f"{s.name}: {s.requests} requests, all {s.status} {s.reason}, "
                         f"app never called (0 calls)")
        if s.gk is not None and s.name != "gk-public-path":
            outcome = "allow" if s.allowed else "refuse"
            value = s.gk.metrics.registry.get_sample_value(
                "gatekeeper_decisions_total", {"outcome": outcome, "reason": s.reason or "ok"})
            if value != s.requests:
                raise CheckFailed(f"{s.name}: metrics counted {value} decisions, "
                                  f"expected {s.requests}")
            lines[-1] += f"; metrics recorded {int(value)} {outcome} decisions"
    jwt_gk = next(s.gk for s in scenarios if s.name == "gk-jwt")
    verifier = jwt_gk.runtime.authenticator._jwt if jwt_gk is not None else None
    if verifier is None or verifier.verifications != 1:
        raise CheckFailed(f"gk-jwt: expected 1 signature verification, got "
                          f"{getattr(verifier, 'verifications', None)}")
    lines.append("gk-jwt: 1 signature verification in total (every later request a cache hit)")
    return lines
