"""Per-stage micro timings: each stage of the request pipeline, called in isolation on the
inputs of one real allowed request (and one refused one), in the same process as the scenarios.

A stage is a zero-argument callable built from a ``StageContext``; it is timed in a loop of
``calls`` calls, and so is an empty call in the same round, so a stage's cost is the median
over rounds of (stage - empty call) per call. Instruction counts of the same callables come
from ``instructions.py --stages``, which runs this module as a child:

    python benchmarks/stages.py --stage prepare --calls 2000

Adding a row for a new stage (limits, geo, resale) is one decorated builder::

    @stage("limits", LIMITS, "request and token limits (memory store)", budget="4 us")
    def _limits(ctx: StageContext) -> Callable[[], object]:
        return lambda: ...

with ``expect`` (optional) checking the stage's answer once before it is timed. Stages read
gatekeeper's internals (``gatekeeper.pipeline``), so this module follows the current tree only;
``workload.py`` is the part that runs against any checkout.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gatekeeper
from benchmarks import geo_files
from benchmarks.apps import (
    CHAT_BODY,
    CHAT_PATH,
    CLIENT,
    PEPPER,
    WRONG_CLIENT,
    Calls,
    TrivialApp,
    make_headers,
    make_scope,
)
from benchmarks.driver import CheckFailed, rotation
from benchmarks.scenarios import audit_sink, benchmark_policy, credential_for
from benchmarks.stats import Paired, paired
from gatekeeper.decision import Decision, decide
from gatekeeper.facts import Headers, RequestFacts, Scan
from gatekeeper.limits.plan import build_plan, credential_part
from gatekeeper.pipeline import MISS, evaluate, prepare, record_key, route
from gatekeeper.policy.limits import LimitSet, Rate, TenantLimits
from gatekeeper.principal import Principal
from gatekeeper.reasons import OK
from gatekeeper.store.memory_counters import MemoryCounterStore

T = TypeVar("T")

CACHED = "cached"
MISS_PATH = "miss"
REFUSAL = "refusal"
GEO = "geo"
LIMITS = "limits"
RESALE = "resale"
GROUPS = {
    CACHED: "Allowed request, decision record fresh (every request of a known client): "
            "the foundation path",
    LIMITS: "Limits, the engine alone (the gk-*limit* scenarios time them through "
            "requests): added on top of the foundation path for a key with limits",
    MISS_PATH: "Decision-record miss (once per credential and client per keys.cache_ttl, "
               "1 s by default)",
    REFUSAL: "Refusal path (every refused request: refusals are never recorded)",
    GEO: "Geo (a tenant with a country rule; others pay nothing): on the miss path only, a "
         "reused decision record pays nothing",
    RESALE: "Resale score (a tenant with the score on; others pay one attribute check): "
            "added to every request of a known key",
}
FOUNDATION_BUDGET = 5.0
FOUNDATION_STRETCH = 3.0
EMPTY = "empty-call"
"""The reference every stage is paired with: a call of a function that does nothing."""


@dataclass
class StageContext:
    """One real request's inputs and intermediate results, from a fresh Gatekeeper over the
    trivial app with a cached API key bound to the tenant's and the key's networks."""

    gk: gatekeeper.Gatekeeper
    rt: gatekeeper.Runtime
    headers: Headers
    peer: tuple[str, int]
    path: str
    below: str
    now: float
    mono: float
    scan: Scan
    key: tuple[Any, ...] | None
    facts: RequestFacts
    credential: gatekeeper.Credential
    principal: Principal
    decision: Decision
    refused: Decision
    refused_facts: RequestFacts
    refused_key: tuple[Any, ...] | None
    refused_scope: dict[str, Any]
    audit: gatekeeper.AuditLog


Builder = Callable[[StageContext], Callable[[], object]]
"""Builds a stage's zero-argument callable from the context."""


@dataclass(frozen=True)
class Stage:
    id: str
    group: str
    what: str
    build: Builder
    budget: str = ""
    expect: Callable[[StageContext, Any], bool] | None = None
    within: str = ""
    """The id of a stage that already includes this one (left out of the group's sum)."""


STAGES: list[Stage] = []
"""The registry, in table order."""


def stage(id: str, group: str, what: str, *, budget: str = "",
          expect: Callable[[StageContext, Any], bool] | None = None, within: str = ""
          ) -> Callable[[Builder], Builder]:
    """Registers a stage builder; ``expect`` checks the stage's answer once before timing,
    ``within`` names a stage that already includes this one."""
    def register(build: Builder) -> Builder:
        if any(s.id == id for s in STAGES):
            raise ValueError(f"stage {id!r} registered twice")
        STAGES.append(Stage(id, group, what, build, budget, expect, within))
        return build
    return register


def drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (a cache hit, the memory store) to its result."""
    try:
        coro.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coro.close()
    raise CheckFailed("a stage suspended: it cannot be timed as a plain call")


def nothing() -> None:
    return None


async def build_context() -> StageContext:
    policy = benchmark_policy()
    store = gatekeeper.MemoryStore()
    gk = gatekeeper.Gatekeeper(TrivialApp(Calls()), policy, store=store, pepper=PEPPER,
                               audit=gatekeeper.AuditLog(audit_sink()))
    rt = gk.runtime
    now, mono = gk.clock.now(), gk.clock.monotonic()
    token = await credential_for("key", store, policy, now)
    headers = make_headers(token)
    below = route(rt, CHAT_PATH, "")
    if not below:
        raise CheckFailed(f"stages: {CHAT_PATH} is not protected: {below!r}")
    scan = rt.reader.scan(headers)
    key = record_key(rt, scan, CLIENT, below)
    decision, facts, _ = await evaluate(rt, scan, key, "POST", CHAT_PATH, below, CLIENT, now, mono)
    if not decision.allowed or facts is None or facts.credential is None:
        raise CheckFailed(f"stages: the context request was not allowed: {decision!r}")
    principal = await rt.authenticator.authenticate(facts.credential, now)
    if not isinstance(principal, Principal):
        raise CheckFailed(f"stages: the key did not authenticate: {principal!r}")
    refused_key = record_key(rt, scan, WRONG_CLIENT, below)
    refused, refused_facts, _ = await evaluate(rt, scan, refused_key, "POST", CHAT_PATH, below,
                                            WRONG_CLIENT, now, mono)
    if refused.reason.code != "network_not_allowed" or refused_facts is None:
        raise CheckFailed(f"stages: expected network_not_allowed, got {refused!r}")
    return StageContext(
        gk, rt, headers, CLIENT, CHAT_PATH, below, now, mono, scan, key, facts,
        facts.credential, principal, decision, refused, refused_facts, refused_key,
        make_scope("POST", CHAT_PATH, WRONG_CLIENT, token), gk.audit)


# --- the registry: the allowed path with a fresh decision record ------------------------------

FOUNDATION = f"part of the foundation path's {FOUNDATION_BUDGET:g} us " \
             f"(stretch {FOUNDATION_STRETCH:g})"


@stage("route-memo", CACHED, "route memo lookup (`rt.route_memo.get(path, MISS)`)",
       budget=FOUNDATION, expect=lambda ctx, r: r == ctx.below)
def _route_memo(ctx: StageContext) -> Callable[[], object]:
    memo, path = ctx.rt.route_memo, ctx.path
    return lambda: memo.get(path, MISS)


@stage("clocks", CACHED, "clock reads: `perf_counter()` twice, `clock.now()`, "
       "`clock.monotonic()`", budget=FOUNDATION)
def _clocks(ctx: StageContext) -> Callable[[], object]:
    from time import perf_counter
    now, mono = ctx.gk.clock.now, ctx.gk.clock.monotonic

    def clocks() -> float:
        started = perf_counter()
        now()
        mono()
        return perf_counter() - started
    return clocks


@stage("scan", CACHED, "header scan of the benchmark's 6 headers (`reader.scan`)",
       budget=FOUNDATION, expect=lambda ctx, r: r == ctx.scan, within="prepare")
def _scan(ctx: StageContext) -> Callable[[], object]:
    scan, headers = ctx.rt.reader.scan, ctx.headers
    return lambda: scan(headers)


@stage("prepare", CACHED, "`prepare`: scan + record key + decision record reused "
       "(includes `scan`)", budget=FOUNDATION,
       expect=lambda ctx, r: r[0] is not None and r[0].decision.allowed)
def _prepare(ctx: StageContext) -> Callable[[], object]:
    rt, headers, peer, below, now, mono = ctx.rt, ctx.headers, ctx.peer, ctx.below, ctx.now, \
        ctx.mono
    return lambda: prepare(rt, headers, peer, below, now, mono)


@stage("metrics", CACHED, "`metrics.record` (allowed, one latency bucket)", budget=FOUNDATION)
def _metrics(ctx: StageContext) -> Callable[[], object]:
    record = ctx.gk.metrics.record
    return lambda: record(OK, 2e-6)


# --- limits (the engine alone; gk-limits* scenarios time it through the middleware) -----------

BENCH_LIMITS = TenantLimits(per_key=LimitSet(requests=Rate(60, 60.0), tokens=Rate(90_000, 60.0)))
BENCH_LIMITS_CC = TenantLimits(per_key=LimitSet(requests=Rate(60, 60.0),
                                                tokens=Rate(90_000, 60.0), concurrency=4))
TOKEN_ESTIMATE = 500


def _limits_call(ctx: StageContext, limits: TenantLimits,
                 release: bool) -> Callable[[], object]:
    """``build_plan`` + ``MemoryCounterStore.apply`` (+ ``release`` of the slot), one second
    apart each call, so 60/minute and 90000 tokens/minute always allow."""
    store, principal, client = MemoryCounterStore(), ctx.principal, ctx.facts.client
    tenant, kind, key_id = principal.tenant, principal.kind, principal.key_id
    clock = [ctx.now]

    def limits_stage() -> object:
        clock[0] = now = clock[0] + 1.0
        plan = build_plan(tenant, credential_part(kind, key_id), client, limits,
                          TOKEN_ESTIMATE)
        answers = drive(store.apply(plan, now))
        if release:
            drive(store.release([a.lease for a in answers if a.lease is not None], now))
        return answers
    return limits_stage


def _all_allowed(ctx: StageContext, answers: Any) -> bool:
    return all(a.allowed for a in answers)


@stage("limits", LIMITS, "request + token limits: `build_plan` + `MemoryCounterStore.apply` "
       "(60/minute, 90000 tokens/minute, per key)", budget="4 us", expect=_all_allowed)
def _limits(ctx: StageContext) -> Callable[[], object]:
    return _limits_call(ctx, BENCH_LIMITS, release=False)


@stage("limits-concurrency", LIMITS, "request + token + concurrency limits: `build_plan` + "
       "`apply` + `release` of the slot", budget="8 us (4 more than `limits`)",
       expect=_all_allowed)
def _limits_concurrency(ctx: StageContext) -> Callable[[], object]:
    return _limits_call(ctx, BENCH_LIMITS_CC, release=True)


@stage("request-body", LIMITS, "`read_request` on the benchmark chat body: JSON parse, a "
       "models glob, a max_tokens ceiling, the token estimate", budget="6 us",
       expect=lambda ctx, r: getattr(r, "model", None) == "gpt-4o-mini")
def _request_body(ctx: StageContext) -> Callable[[], object]:
    from gatekeeper.policy.request_policy import RequestPolicy
    from gatekeeper.request_body import read_request

    rules = RequestPolicy(models=("gpt-4o*",), max_tokens=4096)
    return lambda: read_request(CHAT_BODY, "application/json", rules, parse=True)


# --- a decision-record miss ---------------------------------------------------------------------

@stage("route-answer", MISS_PATH, "route answer computed (memo miss: once per request-target)",
       expect=lambda ctx, r: r == ctx.below)
def _route_answer(ctx: StageContext) -> Callable[[], object]:
    answer, path = ctx.rt.routes.answer, ctx.path
    return lambda: answer(path, "")


@stage("facts", MISS_PATH, "`reader.facts` (client address, credential, tenant hint)",
       expect=lambda ctx, r: r.problem is None and r.credential == ctx.credential)
def _facts(ctx: StageContext) -> Callable[[], object]:
    facts, scan, path, below, peer = ctx.rt.reader.facts, ctx.scan, ctx.path, ctx.below, ctx.peer
    return lambda: facts(scan, "POST", path, below, peer)


@stage("authenticate", MISS_PATH, "`authenticator.authenticate` on a cached key "
       "(a coroutine, driven to its result)", expect=lambda ctx, r: r is ctx.principal)
def _authenticate(ctx: StageContext) -> Callable[[], object]:
    authenticate, credential, now = ctx.rt.authenticator.authenticate, ctx.credential, ctx.now
    return lambda: drive(authenticate(credential, now))


@stage("decide", MISS_PATH, "`decide` (status, expiry, tenant, tenant and key networks)",
       expect=lambda ctx, r: r.allowed and r.reason is OK)
def _decide(ctx: StageContext) -> Callable[[], object]:
    facts, principal, policy, now = ctx.facts, ctx.principal, ctx.rt.policy, ctx.now
    return lambda: decide(facts, principal, policy, now)


@stage("evaluate-allow", MISS_PATH, "`evaluate`, all of a miss: facts, authenticate, "
       "decide, remember the record", expect=lambda ctx, r: r[0].allowed)
def _evaluate_allow(ctx: StageContext) -> Callable[[], object]:
    rt, scan, key, path, below, peer, now, mono = ctx.rt, ctx.scan, ctx.key, ctx.path, \
        ctx.below, ctx.peer, ctx.now, ctx.mono
    return lambda: drive(evaluate(rt, scan, key, "POST", path, below, peer, now, mono))


# --- refusals --------------------------------------------------------------------------------

@stage("evaluate-refuse", REFUSAL, "`evaluate` refusing a cached key from outside its "
       "network (403)", expect=lambda ctx, r: r[0].reason is ctx.refused.reason)
def _evaluate_refuse(ctx: StageContext) -> Callable[[], object]:
    rt, scan, key, path, below, now, mono = ctx.rt, ctx.scan, ctx.refused_key, ctx.path, \
        ctx.below, ctx.now, ctx.mono
    return lambda: drive(evaluate(rt, scan, key, "POST", path, below, WRONG_CLIENT, now, mono))


@stage("audit", REFUSAL, "`audit.refused`: the JSON audit line built and logged "
       "(to a NullHandler at INFO)")
def _audit(ctx: StageContext) -> Callable[[], object]:
    audit, decision, facts, now, scope = ctx.audit, ctx.refused, ctx.refused_facts, ctx.now, \
        ctx.refused_scope
    lines = _Capture()
    audit.logger.addHandler(lines)
    try:
        audit.refused(decision, facts, now, scope)
    finally:
        audit.logger.removeHandler(lines)
    if len(lines.messages) != 1 or '"reason":"network_not_allowed"' not in lines.messages[0]:
        raise CheckFailed(f"stage audit: expected one network_not_allowed line, got "
                          f"{lines.messages!r}")
    return lambda: audit.refused(decision, facts, now, scope)


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


# --- geo (on the miss path: pipeline.evaluate after decide) -------------------------------------

@stage("geo-stage", GEO, "the pipeline's geo stage: `rules_for` + `GeoStage.check` (cached "
       "lookup, tenant country rule; a coroutine, driven)", budget="1 us",
       expect=lambda ctx, r: r.allowed)
def _geo_stage(ctx: StageContext) -> Callable[[], object]:
    from benchmarks.apps import COUNTRY_RULE
    from benchmarks.scenarios import benchmark_policy
    from gatekeeper.geo.stage import GeoStage
    from gatekeeper.store.locations import MemoryLocationStore

    geo = GeoStage(benchmark_policy(countries=COUNTRY_RULE), MemoryLocationStore())
    decision, client, principal, now = ctx.decision, ctx.facts.client, ctx.principal, ctx.now

    def geo_stage() -> object:
        rules = geo.rules_for(principal)
        if rules is None:
            raise CheckFailed("stage geo-stage: the tenant has no country rule")
        return drive(geo.check(rules, decision, client, None, False, now))
    return geo_stage


@stage("geo-none", GEO, "`rules_for` for a tenant and key without geo rules (what every "
       "other miss pays)", expect=lambda ctx, r: r is None)
def _geo_none(ctx: StageContext) -> Callable[[], object]:
    rules_for, principal = ctx.rt.geo.rules_for, ctx.principal
    return lambda: rules_for(principal)


@stage("geo-country", GEO, "cached lookup (`GeoResolver.locate`, embedded default) + "
       "`country_decision` (tenant and key rules)", budget="1 us",
       expect=lambda ctx, r: r is None)
def _geo_country(ctx: StageContext) -> Callable[[], object]:
    from gatekeeper.geo.resolver import GeoResolver
    from gatekeeper.geo.rules import CountryRule, country_decision
    from gatekeeper.networks import parse_ip

    resolver, addr = GeoResolver(), parse_ip(geo_files.ADDRESS)
    tenant, key = CountryRule(frozenset({"DE", "FR", "US"})), CountryRule(frozenset({"US"}))
    if resolver.locate(addr).country != "US":
        raise CheckFailed("stage geo-country: iptocc does not place 8.8.8.8 in US")
    return lambda: country_decision(resolver.locate(addr), tenant, key)


@stage("geo-cached", GEO, "cached lookup alone (`GeoResolver.lookup`, a hit)",
       within="geo-country", expect=lambda ctx, r: r.country == "US")
def _geo_cached(ctx: StageContext) -> Callable[[], object]:
    from gatekeeper.geo.resolver import GeoResolver
    from gatekeeper.networks import parse_ip

    resolver, addr = GeoResolver(), parse_ip(geo_files.ADDRESS)
    assert addr is not None
    return lambda: resolver.lookup(addr)


def _iptocc_lookup(address: str) -> Callable[[], object]:
    from gatekeeper.geo.embedded import EmbeddedResolver
    from gatekeeper.networks import parse_ip

    lookup, addr = EmbeddedResolver().lookup, parse_ip(address)
    assert addr is not None
    return lambda: lookup(addr)


@stage("geo-iptocc", GEO, "uncached lookup, embedded default (`iptocc`, IPv4)",
       expect=lambda ctx, r: r is not None and r.country == "US")
def _geo_iptocc(ctx: StageContext) -> Callable[[], object]:
    return _iptocc_lookup(geo_files.ADDRESS)


@stage("geo-iptocc-v6", GEO, "uncached lookup, embedded default (`iptocc`, IPv6)",
       expect=lambda ctx, r: r is not None and r.country == "US")
def _geo_iptocc_v6(ctx: StageContext) -> Callable[[], object]:
    return _iptocc_lookup(geo_files.ADDRESS_V6)


def _mmdb_stage(index: int) -> Builder:
    def build(ctx: StageContext) -> Callable[[], object]:
        from gatekeeper.geo.mmdb import MmdbFile
        from gatekeeper.networks import parse_ip

        get, addr = MmdbFile(geo_files.write_files()[index]).get, parse_ip(geo_files.ADDRESS)
        assert addr is not None
        return lambda: get(addr)
    return build


stage("geo-mmdb-country", GEO, "uncached lookup, `maxminddb` on a Country-layout file "
      "(record decoded and checked)", expect=lambda ctx, r: r.country == "US")(_mmdb_stage(0))
stage("geo-mmdb-city", GEO, "uncached lookup, `maxminddb` on a City-layout file "
      "(GeoLite2-sized record)", expect=lambda ctx, r: r.latitude is not None)(_mmdb_stage(1))


# --- the resale score (every request of a known key, on a reused decision record too) --------

SCORE_PACE = 2.0
"""Seconds between the typical key's requests, in its history and in the timed calls."""


def _resale_stage(ctx: StageContext) -> tuple[Any, Callable[[], object]]:
    """``ResaleStage.run`` for the context's key on a reused decision record (no facts),
    after 300 requests of history at the same pace from the same client: the key has
    learned, its score is 0, and a call only judges (the cached score) and counts."""
    from dataclasses import replace

    from gatekeeper.policy.resale import ResaleSettings
    from gatekeeper.resale.stage import ResaleMemory, ResaleStage

    policy = replace(ctx.rt.policy, resale=ResaleSettings(mode="enforce"))
    memory = ResaleMemory(policy, ctx.gk.store, ctx.audit)
    stage_ = ResaleStage(policy, memory, ctx.rt.reader, ctx.rt.geo.resolver.lookup)
    scope = dict(ctx.refused_scope, client=ctx.peer)
    decision, scan, key, below = ctx.decision, ctx.scan, ctx.key, ctx.below
    clock = [ctx.now - 300 * SCORE_PACE]
    run = stage_.run

    def score() -> object:
        clock[0] = now = clock[0] + SCORE_PACE
        return run(decision, None, scan, key, scope, below, now, None)
    for _ in range(300):
        score()
    return stage_, score


@stage("score", RESALE, f"`ResaleStage.run` on a typical key (learned, score 0, one request "
       f"every {SCORE_PACE:g} s from one client): judge from the state before the request, "
       "count it", budget="3 us", expect=lambda ctx, r: r is ctx.decision)
def _score(ctx: StageContext) -> Callable[[], object]:
    return _resale_stage(ctx)[1]


# --- timing ----------------------------------------------------------------------------------


def loop(fn: Callable[[], object], calls: int) -> int:
    """Nanoseconds for ``calls`` calls of ``fn``."""
    start = time.perf_counter_ns()
    for _ in range(calls):
        fn()
    return time.perf_counter_ns() - start


@dataclass
class StageTimer:
    """Builds every registered stage on one context, checks each once, then times them in
    rounds (interleaved, rotating, each beside an empty call timed in the same round)."""

    ctx: StageContext
    stages: list[Stage] = field(default_factory=lambda: list(STAGES))
    us: dict[str, list[float]] = field(default_factory=dict)
    fns: dict[str, Callable[[], object]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.fns[EMPTY] = nothing
        for s in self.stages:
            fn = s.build(self.ctx)
            result = fn()
            if s.expect is not None and not s.expect(self.ctx, result):
                raise CheckFailed(f"stage {s.id}: unexpected result {result!r}")
            self.fns[s.id] = fn
        self.us = {name: [] for name in self.fns}

    def round(self, index: int, calls: int) -> None:
        for name in rotation(list(self.fns), index):
            gc.collect()
            self.us[name].append(loop(self.fns[name], calls) / calls / 1000)

    def net(self, stage_id: str) -> Paired:
        """Microseconds per call, net of an empty call of the same round."""
        return paired(self.us[stage_id], self.us[EMPTY])


def build_stage(stage_id: str) -> tuple[StageContext, Callable[[], object]]:
    ctx = asyncio.run(build_context())
    if stage_id == EMPTY:
        return ctx, nothing
    for s in STAGES:
        if s.id == stage_id:
            fn = s.build(ctx)
            result = fn()
            if s.expect is not None and not s.expect(ctx, result):
                raise CheckFailed(f"stage {s.id}: unexpected result {result!r}")
            return ctx, fn
    raise CheckFailed(f"no stage {stage_id!r}; known: {', '.join(s.id for s in STAGES)}")


def main(argv: list[str] | None = None) -> int:
    """Child mode for ``instructions.py --stages``: call one stage ``--calls`` times."""
    parser = argparse.ArgumentParser(description="Call one pipeline stage N times "
                                     "(for instruction counts).")
    parser.add_argument("--stage", required=True,
                        help=f"{EMPTY} or one of: {', '.join(s.id for s in STAGES)}")
    parser.add_argument("--calls", type=int, required=True)
    args = parser.parse_args(argv)
    try:
        _, fn = build_stage(args.stage)
    except CheckFailed as exc:
        print(f"CHECK FAILED: {exc}", file=sys.stderr)
        return 1
    for _ in range(args.calls):
        fn()
    print(f'{{"stage": "{args.stage}", "calls": {args.calls}, '
          f'"gatekeeper": "{Path(gatekeeper.__file__).parent}"}}')
    return 0


if __name__ == "__main__":
    sys.exit(main())
