"""The apps ``http_load.py`` serves, one per server process: the in-process harness's apps and
policies, with the tenant and key networks moved to loopback (over HTTP the client is
127.0.0.1, not the documentation address the in-process scope carries). The Redis variants
use the ``redis-server`` the harness started (its URL in ``GK_BENCH_REDIS_URL``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gatekeeper
from benchmarks.apps import (
    COUNTRY_RULE,
    FULL_TENANT,
    FULL_TOP,
    JWT_SECRET,
    JWT_SECRET_ENV,
    LIMITS_LEASE,
    LIMITS_RTC,
    PEPPER,
    POLICY,
    SLOWAPI_LIMIT,
    TENANT,
    ASGIApp,
    Calls,
    PassThrough,
    make_app,
    make_slowapi_app,
)
from benchmarks.scenarios import FORGED_KEY
from gatekeeper import key_admin
from gatekeeper.store.redis import RedisStore

REDIS_URL_ENV = "GK_BENCH_REDIS_URL"

TENANT_NETWORKS = ["127.0.0.0/8", "::1/128"]
KEY_NETWORKS = ["127.0.0.0/28"]
"""The key is bound inside the tenant's network, and the client (127.0.0.1) is in both: every
network check runs and passes, as in the in-process ``gk-api-key``."""


def _noop_middleware(calls: Calls) -> ASGIApp:
    return PassThrough(make_app(calls))


@dataclass(frozen=True)
class Variant:
    name: str
    what: str
    plain: Callable[[Calls], ASGIApp] | None = None
    """The app without gatekeeper; None: gatekeeper over the Starlette app."""
    limits: dict[str, Any] | None = None
    countries: bool = False
    full: bool = False
    """The full policy (``FULL_TENANT``: country and model rules, limits on key and tenant,
    the resale score in shadow)."""
    redis: bool = False
    """Keys and limits in the harness's redis-server (skipped without one)."""

    @property
    def gatekeeper(self) -> bool:
        return self.plain is None


VARIANTS = (
    Variant("bare", "bare Starlette app, POST /v1/chat/completions", make_app),
    Variant("noop-middleware", "the app behind a do-nothing pure-ASGI middleware",
            _noop_middleware),
    Variant("slowapi", f"slowapi decorator, one in-memory limit ({SLOWAPI_LIMIT}) keyed by "
            "remote address", make_slowapi_app),
    Variant("gk-api-key", "gatekeeper: a valid API key (cached), tenant and key networks "
            "checked"),
    Variant("gk-limits", "gk-api-key with the tenant's request, token and concurrency limits "
            "(memory store), x-ratelimit headers, tokens reconciled from the usage",
            limits=LIMITS_RTC),
    Variant("gk-limits-country", "gk-limits with the tenant's country rule (checked once per "
            "decision record)", limits=LIMITS_RTC, countries=True),
    Variant("gk-full", "gatekeeper with the full policy: binding, a country rule, the model "
            "rule, request + token + concurrency limits per key and request + token per "
            "tenant (memory store), the resale score (shadow)", full=True),
    Variant("gk-limits-redis", "gk-limits with keys and limits in Redis, strict (one EVALSHA "
            "per request: the slot's release and the tokens' reconcile ride in the next one)",
            limits=LIMITS_RTC, redis=True),
    Variant("gk-limits-lease", "gk-limits-redis in lease mode: slices of 100 requests and "
            "200000 tokens, concurrency counted per replica", limits=LIMITS_LEASE, redis=True),
)
BY_NAME = {v.name: v for v in VARIANTS}


def loopback_policy(limits: dict[str, Any] | None, countries: bool,
                    full: bool = False) -> gatekeeper.Policy:
    """The in-process policy (its JWT issuer too, unused here) on loopback networks."""
    os.environ.setdefault(JWT_SECRET_ENV, JWT_SECRET)
    tenant: dict[str, Any] = {"allowed_networks": TENANT_NETWORKS}
    top = POLICY
    if full:
        tenant |= FULL_TENANT
        top = POLICY | FULL_TOP
    if limits is not None:
        tenant["limits"] = limits
    if countries:
        tenant["countries"] = COUNTRY_RULE
    return gatekeeper.compile_policy(top | {"tenants": {TENANT: tenant}}, "http benchmark")


async def build(variant: Variant) -> tuple[ASGIApp, str]:
    """The app to serve, and the API key to send it. Apps without gatekeeper get a key of the
    same shape and length, so every variant receives the same bytes."""
    calls = Calls()
    if variant.plain is not None:
        return variant.plain(calls), FORGED_KEY
    policy = loopback_policy(variant.limits, variant.countries, variant.full)
    if variant.redis:
        url = os.environ[REDIS_URL_ENV]
        writer = RedisStore(url)  # this loop's connections close with it; the server's
        try:                      # store connects in uvicorn's loop
            token, _ = await key_admin.create_key(writer, PEPPER, policy, TENANT, time.time(),
                                                  networks=KEY_NETWORKS)
        finally:
            await writer.close()
        return gatekeeper.Gatekeeper(make_app(calls), policy, store=RedisStore(url),
                                     pepper=PEPPER), token
    store = gatekeeper.MemoryStore()
    token, _ = await key_admin.create_key(store, PEPPER, policy, TENANT, time.time(),
                                          networks=KEY_NETWORKS)
    return gatekeeper.Gatekeeper(make_app(calls), policy, store=store, pepper=PEPPER), token
