"""The workload instructions.py counts and before_after.py times, for any checkout of
gatekeeper: it uses only the API that old and new trees share (``Gatekeeper(app, policy,
store=MemoryStore(), pepper=...)``, ``key_admin.create_key``, ``compile_policy``,
``Gatekeeper.metrics``).

    python benchmarks/workload.py [--tree PATH] --scenario NAME --requests N
    python benchmarks/workload.py [--tree PATH] --time [--rounds R] --requests N [--round I]

``--tree PATH`` puts PATH first on ``sys.path`` before gatekeeper is imported (and checks
that the gatekeeper imported is PATH's). The first form sends N requests to one scenario,
after a checked probe and a warm-up, and ends with another checked probe: run under
cachegrind with two values of N, the difference of the counts is N2 - N1 requests and
nothing else. The second times every scenario, interleaved (the order rotates with
``--round``), and prints microseconds per request as JSON.

Gatekeeper runs here with ``keys.cache_ttl`` at its maximum (60 s), so the measured requests
never include a re-read of the key from the store (under cachegrind a request takes about a
millisecond, and a 1 s TTL would put a store read in the loop every thousand requests, more
or fewer depending on the machine's speed); each gatekeeper scenario checks that the store
was read exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.apps import (
    CHAT_PATH,
    CLIENT,
    FULL_TENANT,
    FULL_TOP,
    KEY_NETWORKS,
    PEPPER,
    ROUTES,
    TENANT,
    TENANTS,
    ASGIApp,
    Calls,
    PassThrough,
    TrivialApp,
    make_app,
    make_scope,
    make_slowapi_app,
)
from benchmarks.driver import CheckFailed, probe, rotation
from benchmarks.driver import run as run_requests
from benchmarks.driver import timed as timed_requests

ROOT = Path(__file__).resolve().parent.parent
WORKLOAD_POLICY: dict[str, Any] = {"routes": ROUTES, "tenants": TENANTS,
                                   "keys": {"cache_ttl": 60}}
SCENARIOS: dict[str, tuple[str | None, str]] = {
    "trivial": (None, "the do-nothing app alone (200, empty body)"),
    "noop-over-trivial": ("trivial", "a do-nothing pure-ASGI middleware over the trivial app"),
    "gk-over-trivial": ("trivial", "gatekeeper over the trivial app: cached API key, tenant "
                        "and key networks checked"),
    "bare": (None, "the Starlette app alone, POST /v1/chat/completions"),
    "noop-middleware": ("bare", "a do-nothing pure-ASGI middleware over the Starlette app"),
    "gk-api-key": ("bare", "gatekeeper over the Starlette app: cached API key, tenant and "
                   "key networks checked"),
    "slowapi": ("bare", "slowapi over the Starlette app, one in-memory limit"),
    "gk-one-limit": ("bare", "gk-api-key with one per-key request limit (what slowapi has), "
                     "x-ratelimit headers added (trees with limits only)"),
    "gk-limits": ("bare", "gk-api-key with per-key request and token limits (memory store): "
                  "x-ratelimit headers, tokens reconciled from the JSON usage (trees with "
                  "limits only)"),
    "gk-limits-all": ("bare", "gk-limits plus a concurrency limit: a slot taken and released "
                      "per request (trees with limits only)"),
    "gk-full": ("bare", "the full policy: binding, a country rule, the model rule, request + "
                "token + concurrency limits per key and request + token per tenant, the resale "
                "score in shadow (trees with all of them only)"),
    "slowapi-headers": ("bare", "slowapi with its rate-limit headers on (headers_enabled), one "
                        "in-memory limit"),
}
"""name -> (the baseline it is paired with, what it is)."""
OWN_COST: tuple[tuple[str, str, str], ...] = (
    ("noop-over-trivial", "trivial", "no-op middleware, over the trivial app"),
    ("gk-over-trivial", "trivial", "**gatekeeper, cached API key, tenant + key networks, "
     "over the trivial app (own cost)**"),
    ("gk-over-trivial", "noop-over-trivial", "gatekeeper beyond the no-op middleware"),
    ("noop-middleware", "bare", "no-op middleware, over Starlette"),
    ("gk-api-key", "bare", "gatekeeper, same request, over Starlette"),
    ("slowapi", "bare", "slowapi, one in-memory limit, over Starlette"),
    ("gk-one-limit", "bare", "gatekeeper with one request limit, over Starlette"),
    ("gk-limits", "bare", "gatekeeper with request + token limits, over Starlette"),
    ("gk-limits-all", "bare", "gatekeeper with request + token + concurrency limits, over "
     "Starlette"),
    ("gk-full", "bare", "gatekeeper with the full policy, over Starlette"),
    ("slowapi-headers", "bare", "slowapi with its rate-limit headers, over Starlette"),
)
"""(setup, baseline, label): what before_after.py and instructions.py report as added cost."""
WARMUP = 100


def import_gatekeeper(tree: Path) -> ModuleType:
    """gatekeeper from ``tree``, first on sys.path; refuses any other copy."""
    if "gatekeeper" in sys.modules:
        raise CheckFailed("gatekeeper was imported before --tree was applied")
    sys.path.insert(0, str(tree))
    gk = importlib.import_module("gatekeeper")
    importlib.import_module("gatekeeper.key_admin")
    where = Path(gk.__file__ or "").resolve().parent
    if where != (tree / "gatekeeper").resolve():
        raise CheckFailed(f"imported gatekeeper from {where}, not from {tree}")
    logger = logging.getLogger("gatekeeper.audit")
    logger.setLevel(logging.WARNING)  # refusals are not measured here; nothing is refused
    logger.addHandler(logging.NullHandler())
    return gk


@dataclass
class Workload:
    name: str
    app: ASGIApp
    scope: dict[str, Any]
    calls: Calls
    gk: Any = None
    store: Any = None
    requests: int = 0
    us: list[float] = field(default_factory=list)


async def build(name: str, gk_module: ModuleType) -> Workload:
    if name not in SCENARIOS:
        raise CheckFailed(f"no workload scenario {name!r}; known: {', '.join(SCENARIOS)}")
    calls = Calls()
    trivial = name in ("trivial", "noop-over-trivial", "gk-over-trivial")
    inner: ASGIApp = TrivialApp(calls) if trivial else (
        make_slowapi_app(calls, headers=name == "slowapi-headers") if name.startswith("slowapi")
        else make_app(calls))
    if name.startswith("noop"):
        return Workload(name, PassThrough(inner), make_scope("POST", CHAT_PATH, CLIENT, None),
                        calls)
    if not name.startswith("gk"):
        return Workload(name, inner, make_scope("POST", CHAT_PATH, CLIENT, None), calls)

    class CountingStore(gk_module.MemoryStore):  # type: ignore[misc,name-defined]
        reads = 0

        async def get_key(self, key_id: str) -> Any:
            self.reads += 1
            return await super().get_key(key_id)

    data = WORKLOAD_POLICY
    if name == "gk-full":
        data = {**data, **FULL_TOP, "tenants": {TENANT: {**TENANTS[TENANT], **FULL_TENANT}}}
    elif name.startswith("gk-limits") or name == "gk-one-limit":
        high = "1000000000/minute"  # always room: every request charged and allowed
        limits: dict[str, Any] = {"requests": high}
        if name != "gk-one-limit":
            limits["tokens"] = high
        if name == "gk-limits-all":
            limits["concurrency"] = 64
        data = {**data, "tenants": {TENANT: {**TENANTS[TENANT], "limits": limits}}}
    policy = gk_module.compile_policy(data, "workload policy")
    store = CountingStore()
    token, _ = await gk_module.key_admin.create_key(store, PEPPER, policy, TENANT, time.time(),
                                                    networks=KEY_NETWORKS)
    app = gk_module.Gatekeeper(inner, policy, store=store, pepper=PEPPER)
    return Workload(name, app, make_scope("POST", CHAT_PATH, CLIENT, token), calls, app, store)


async def check(w: Workload, when: str) -> None:
    before = w.calls.count
    status, body = await probe(w.app, w.scope)
    w.requests += 1
    if status != 200 or w.calls.count != before + 1:
        raise CheckFailed(f"{w.name} ({when}): status {status}, app calls {before} -> "
                          f"{w.calls.count}: {body[:200]!r}")


def final_check(w: Workload) -> str:
    if w.calls.count != w.requests:
        raise CheckFailed(f"{w.name}: app called {w.calls.count} times for {w.requests}")
    line = f"{w.name}: {w.requests} requests, all 200, app called {w.calls.count} times"
    if w.gk is not None:
        allowed = w.gk.metrics.registry.get_sample_value(
            "gatekeeper_decisions_total", {"outcome": "allow", "reason": "ok"})
        if allowed != w.requests:
            raise CheckFailed(f"{w.name}: metrics counted {allowed} allowed, not {w.requests}")
        if w.store.reads != 1:
            raise CheckFailed(f"{w.name}: the key was read from the store {w.store.reads} "
                              "times, expected once (the first request)")
        line += f"; metrics counted {int(allowed)} allowed; the store was read once"
    return line


async def count_mode(gk_module: ModuleType, name: str, requests: int) -> dict[str, Any]:
    w = await build(name, gk_module)
    await check(w, "first request")
    await run_requests(w.app, w.scope, WARMUP)
    w.requests += WARMUP
    await check(w, "after warm-up")
    await run_requests(w.app, w.scope, requests)
    w.requests += requests
    await check(w, "after the requests")
    return {"scenario": name, "requests": requests, "check": final_check(w)}


async def time_mode(gk_module: ModuleType, names: list[str], rounds: int, requests: int,
                    first_round: int) -> dict[str, Any]:
    workloads = [await build(n, gk_module) for n in names]
    warmup = min(requests, 1000)
    for w in workloads:
        await check(w, "first request")
        await run_requests(w.app, w.scope, warmup)
        w.requests += warmup
        await check(w, "after warm-up")
    for r in range(rounds):
        for w in rotation(workloads, first_round + r):
            gc.collect()
            ns = await timed_requests(w.app, w.scope, requests)
            w.requests += requests
            w.us.append(ns / requests / 1000)
    for w in workloads:
        await check(w, "after timing")
    return {"us": {w.name: w.us for w in workloads},
            "checks": [final_check(w) for w in workloads]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Requests for instruction counts or timing, "
                                     "against any gatekeeper checkout.")
    parser.add_argument("--tree", type=Path, default=ROOT,
                        help="the checkout whose gatekeeper is measured (default: this one)")
    parser.add_argument("--scenario", choices=list(SCENARIOS))
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--time", action="store_true", help="time every scenario, print JSON")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--round", type=int, default=0, help="rotation of the first round")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.rounds < 1:
        parser.error("--requests and --rounds must be at least 1")
    if not args.time and args.scenario is None:
        parser.error("give --scenario NAME, or --time")
    tree = args.tree.resolve()
    try:
        gk_module = import_gatekeeper(tree)
        if args.time:
            out = asyncio.run(time_mode(gk_module, [args.scenario] if args.scenario else
                                        list(SCENARIOS), args.rounds, args.requests,
                                        args.round))
        else:
            out = asyncio.run(count_mode(gk_module, args.scenario, args.requests))
    except CheckFailed as exc:
        print(f"CHECK FAILED: {exc}", file=sys.stderr)
        return 1
    out["gatekeeper"] = str(Path(gk_module.__file__ or "").resolve().parent)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
