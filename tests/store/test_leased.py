"""Lease mode against a real redis-server: requests decided from a replica's slice make no
round trip, the allowed total stays within the documented bound, reservations are settled
against the slice, and unused units go back to Redis when a slice lapses."""

from __future__ import annotations

import asyncio
import time

import pytest

from gatekeeper import Gatekeeper, MemoryStore, key_admin
from gatekeeper.errors import PolicyError
from gatekeeper.limits.plan import CONCURRENCY, QUOTA, RATE, REQUESTS, TOKENS, Counter, build_plan
from gatekeeper.policy.load import compile_policy
from gatekeeper.store.leased import LeasedCounters
from gatekeeper.store.redis import RedisStore
from gatekeeper.store.redis_changes import CHANNEL
from gatekeeper.store.redis_counters import rate_state
from tests.conftest import PEPPER, Recorder, asgi_request
from tests.redis_server import redis_server
from tests.store.conftest import SLACK, empty_redis_store, slots_held
from tests.store.test_redis_gatekeeper import auth
from tests.store.test_redis_store import calls

pytestmark = pytest.mark.anyio
MONTH = 31 * 86_400.0
"""A period that refills slowly: what Redis counted is still there to read."""


def rate(key: str, limit: int, slice_: int, period: float = 60.0, cost: int = 1,
         unit: str = REQUESTS, ttl: float = 5.0) -> Counter:
    return Counter(RATE, "gk:{t:a}:" + key, "{t:a}", limit, period, cost, unit, 0.0, slice_, ttl)


async def fresh(redis_port: int) -> RedisStore:
    store = await empty_redis_store(redis_port, server_time=True)
    await store.redis.config_resetstat()
    return store


# --- the policy ------------------------------------------------------------------------------

def test_lease_is_chosen_per_limit_and_scope_and_reaches_the_plan() -> None:
    policy = compile_policy({"prices": {"default": {"input": 1, "output": 2}},
                             "tenants": {"acme": {"limits": {
        "requests": "600/minute", "tokens": "90000/minute", "concurrency": 8,
        "daily_spend": 20,
        "lease": {"requests": 20, "tokens": 4000, "concurrency": 2, "daily_spend": 0.5,
                  "ttl": 1.5},
        "per_tenant": {"requests": "6000/minute", "lease": {"requests": 100}},
        "per_client": {"requests": "60/minute"}}}}})
    limits = policy.tenants["acme"].limits
    plan = build_plan("acme", "kAAA", None, limits, 10, now=time.time(), spend=5)
    by_scope = [(c.key.split("}:")[1].split(":")[0], c.kind, c.unit, c.slice, c.ttl) for c in plan]
    assert by_scope == [("kAAA", RATE, REQUESTS, 20, 1.5), ("kAAA", RATE, TOKENS, 4000, 1.5),
                        ("kAAA", QUOTA, "spend", 500_000, 1.5),
                        ("kAAA", CONCURRENCY, REQUESTS, 2, 1.5),
                        ("all", RATE, REQUESTS, 100, 2.0)]
    # strict stays the default: no lease section, no slice
    strict = compile_policy({"tenants": {"acme": {"limits": {"requests": "60/minute"}}}})
    assert [c.slice for c in build_plan("acme", "kA", None, strict.tenants["acme"].limits)] == [0]


@pytest.mark.parametrize(("lease", "field", "problem"), [
    ({"tokens": 10}, "limits.lease.tokens", "has no tokens limit to lease in this scope"),
    ({"requests": 61}, "limits.lease.requests", "must be from 1 to the limit (60)"),
    ({"requests": 0}, "limits.lease.requests", "must be from 1 to the limit (60)"),
    ({"requests": "ten"}, "limits.lease.requests", "must be a whole number"),
    ({"requests": 10, "ttl": 0}, "limits.lease.ttl", "must be between 0.1 and 60"),
    ({"mode": "lease"}, "limits.lease.mode", "is not a limit; lease mode takes requests"),
])
def test_a_wrong_lease_names_its_field(lease: dict[str, object], field: str,
                                       problem: str) -> None:
    with pytest.raises(PolicyError) as caught:
        compile_policy({"tenants": {"acme": {"limits": {"requests": "60/minute",
                                                        "lease": lease}}}})
    found = [e for e in caught.value.errors if e.field == f"tenants.acme.{field}"]
    assert found and problem in found[0].problem, caught.value.errors


def test_a_lease_in_per_tenant_is_checked_against_that_scope() -> None:
    with pytest.raises(PolicyError) as caught:
        compile_policy({"tenants": {"acme": {"limits": {
            "requests": "60/minute", "per_tenant": {"lease": {"requests": 5}}}}}})
    assert [e.field for e in caught.value.errors] == \
        ["tenants.acme.limits.per_tenant.lease.requests"]


# --- round trips -----------------------------------------------------------------------------

async def test_steady_state_makes_at_most_one_round_trip_per_50_requests(
        redis_port: int) -> None:
    """2000 requests on a key and a tenant counter at slice 100: every top-up refills both in
    one EVALSHA when a slice is half spent, so about 2000 / 50 calls, not 4000."""
    store = await fresh(redis_port)
    leased = LeasedCounters(store)
    plan = (rate("k:rq", 1_000_000, 100, MONTH), rate("all:rq", 1_000_000, 100, MONTH))
    try:
        for _ in range(2000):
            answers = await leased.apply(plan, time.time())
            assert all(a.allowed for a in answers)
            await asyncio.sleep(0)  # other requests' turn: the top-up runs meanwhile
        evalsha = await calls(store, "evalsha")
        assert evalsha <= 0.05 * 2000, evalsha
        assert evalsha >= 2000 // 100 - 1  # it did take slices from Redis
        # Redis counted what the replica took: handed out + still held
        taken = await _charged(store, plan[0])
        assert abs(taken - (2000 + leased.held(plan[0].key))) <= 2  # GCRA refilled ~1
    finally:
        await leased.close()


async def test_a_refusal_from_redis_is_repeated_locally_until_its_retry_after(
        redis_port: int) -> None:
    store = await fresh(redis_port)
    leased = LeasedCounters(store)
    plan = (rate("k:rq", 20, 10, period=3600),)
    try:
        codes = [(await leased.apply(plan, time.time()))[0].allowed for _ in range(60)]
        assert codes.count(True) == 20
        before = await calls(store, "evalsha")
        refused = await leased.apply(plan, time.time())
        assert not refused[0].allowed and refused[0].retry_after > 0
        assert await calls(store, "evalsha") == before  # decided here, no round trip
    finally:
        await leased.close()


# --- the bound -------------------------------------------------------------------------------

async def test_two_replicas_allow_within_the_limit_plus_or_minus_two_slices(
        redis_port: int) -> None:
    """100/minute, slice 10, two replicas hammered concurrently: at most what Redis granted
    (100 + the rate's refill over the run), at least 100 - 2 x 10 (units the other held)."""
    stores = [await fresh(redis_port), await empty_redis_store(redis_port, server_time=True)]
    replicas = [LeasedCounters(s) for s in stores]
    plan = (rate("k:rq", 100, 10),)
    answers: list[bool] = []

    async def hammer(replica: LeasedCounters) -> None:
        for _ in range(150):
            answers.append((await replica.apply(plan, time.time()))[0].allowed)
            await asyncio.sleep(0)

    try:
        started = time.monotonic()
        await asyncio.gather(*(hammer(r) for r in replicas for _ in range(4)))
        elapsed = time.monotonic() - started
        allowed = answers.count(True)
        assert 100 - 2 * 10 <= allowed <= 100 + elapsed * 100 / 60 + 1, (allowed, elapsed)
        assert all(r.held(plan[0].key) <= 10 for r in replicas)
    finally:
        for r in replicas:
            await r.close()


# --- reservations and lapses -----------------------------------------------------------------

async def test_reconciles_move_the_slice_and_reach_redis_batched(redis_port: int) -> None:
    store = await fresh(redis_port)
    leased = LeasedCounters(store)
    tokens = rate("k:tk", 1_000_000, 5000, MONTH, cost=400, unit=TOKENS, ttl=0.2)
    try:
        for _ in range(5):
            await leased.apply((tokens,), time.time())
            await leased.reconcile(tokens, 400, 100, time.time())  # used fewer than reserved
        calls_before = await calls(store, "evalsha")
        assert leased.held(tokens.key) == 5000 - 5 * 100
        assert calls_before == 1  # one slice; five reconciles made no round trip
        await asyncio.sleep(0.6)  # lapsed: its background pass hands it all back, in one call
        await leased.sweep(time.time())
        assert await calls(store, "evalsha") == 2
        assert leased.held(tokens.key) == 0
        assert await _charged(store, tokens) == 5 * 100  # Redis holds the real usage
    finally:
        await leased.close()


async def test_usage_past_a_reservation_is_charged_when_the_slice_lapses(
        redis_port: int) -> None:
    store = await fresh(redis_port)
    leased = LeasedCounters(store)
    tokens = rate("k:tk", 1_000_000, 1000, MONTH, cost=900, unit=TOKENS, ttl=0.2)
    try:
        await leased.apply((tokens,), time.time())
        await leased.reconcile(tokens, 900, 2500, time.time())  # the answer ran long
        assert leased.held(tokens.key) == 100 - 1600
        await asyncio.sleep(0.25)
        await leased.sweep(time.time())
        assert await _charged(store, tokens) == 2500
    finally:
        await leased.close()


async def test_close_hands_every_unused_unit_back(redis_port: int) -> None:
    store = await fresh(redis_port)
    leased = LeasedCounters(store)
    plan = (rate("k:rq", 1000, 100, period=3600),)
    await leased.apply(plan, time.time())
    assert await _charged(store, plan[0]) == 100
    await leased.stop()
    try:
        assert await _charged(store, plan[0]) == 1
    finally:
        await store.close()


# --- concurrency and strict counters in one plan -------------------------------------------

async def test_concurrency_in_lease_mode_counts_its_share_in_this_replica(
        redis_port: int) -> None:
    store = await fresh(redis_port)
    leased = LeasedCounters(store)
    slot = Counter(CONCURRENCY, "gk:{t:a}:k:cc", "{t:a}", 8, 600.0, 1, REQUESTS, 0.0, 2, 5.0)
    plan = (rate("k:rq", 1000, 100), slot)
    try:
        first, second, third = [await leased.apply(plan, time.time()) for _ in range(3)]
        assert first[1].allowed and second[1].allowed and not third[1].allowed
        assert third[0].allowed  # the rate would allow: only the share refused
        assert first[1].lease is not None
        assert await leased.release([first[1].lease], time.time()) == 1
        assert (await leased.apply(plan, time.time()))[1].allowed
        assert await store.redis.exists(slot.key) == 0  # never counted in Redis
        # the refused request took nothing from the rate's slice: 3 of 100 taken
        assert leased.held(plan[0].key) == 97
    finally:
        await leased.close()


async def test_a_strict_counter_refusing_gives_the_leased_units_back(redis_port: int) -> None:
    store = await fresh(redis_port)
    leased = LeasedCounters(store)
    plan = (rate("k:rq", 1000, 100), rate("all:rq", 2, 0, period=3600))
    try:
        answers = [await leased.apply(plan, time.time()) for _ in range(3)]
        assert [a[1].allowed for a in answers] == [True, True, False]
        assert not answers[2][0].lease and answers[2][0].allowed
        assert leased.held(plan[0].key) == 98  # the refused one gave its unit back
        assert await _charged(store, plan[1]) == 2
    finally:
        await leased.close()


async def _charged(store: RedisStore, counter: Counter) -> int:
    """Units a rate counter holds in Redis now (its GCRA debt, in whole units)."""
    raw = await store.redis.get(counter.key)
    if raw is None:
        return 0
    assert isinstance(raw, bytes)
    tat_us, rem = rate_state(raw)
    now_us = int((await store.redis.time())[0]) * 1_000_000 + int((await store.redis.time())[1])
    debt = (tat_us * counter.limit + rem) - now_us * counter.limit
    period_us = round(counter.period * 1_000_000)
    return max(0, round(debt / period_us))


# --- store failure ---------------------------------------------------------------------------

@pytest.mark.parametrize(("rule", "after"), [("fail_closed", 503), ("fail_open", 200)])
async def test_with_redis_down_a_slice_serves_what_it_holds_then_the_failure_rule_applies(
        rule: str, after: int) -> None:
    """Redis dies after a replica took a slice of 3: its 2 units left are served locally, and
    the request that needs Redis gets what ``on_store_error`` says (503, or counted in the
    process); nothing else is reached or raised."""
    policy = compile_policy({"routes": {"protect": ["/v1/*"]}, "keys": {"cache_ttl": 60},
                             "on_store_error": rule,
                             "tenants": {"acme": {"limits": {"requests": "100/hour",
                                                             "lease": {"requests": 3}}}}})
    app = Recorder()
    with redis_server() as port:
        store = RedisStore(f"redis://127.0.0.1:{port}/0", **SLACK)
        gk = Gatekeeper(app, policy, store=store, pepper=PEPPER)
        key, _ = await key_admin.create_key(store, PEPPER, policy, "acme", time.time())
        # the key-change follower's first "anything may have changed" must come before the
        # key is cached, or it would send the next request to a dead store
        await gk.startup()
        while (await store.redis.pubsub_numsub(CHANNEL))[0][1] < 1:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert (await asgi_request(gk, "/v1/models", auth(key)))[0]["status"] == 200
    try:
        codes = [(await asgi_request(gk, "/v1/models", auth(key)))[0]["status"]
                 for _ in range(3)]
        assert codes == [200, 200, after]
        assert len(app.paths) == 3 + (after == 200)
    finally:
        await gk.shutdown()


async def test_the_memory_store_ignores_lease_and_counts_exactly() -> None:
    policy = compile_policy({"routes": {"protect": ["/v1/*"]},
                             "tenants": {"acme": {"limits": {"requests": "3/hour",
                                                             "lease": {"requests": 2}}}}})
    store = MemoryStore()
    gk = Gatekeeper(Recorder(), policy, store=store, pepper=PEPPER)
    key, _ = await key_admin.create_key(store, PEPPER, policy, "acme", time.time())
    codes = [(await asgi_request(gk, "/v1/models", auth(key)))[0]["status"] for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    assert gk.runtime.counters.embedded  # no lease layer: one process decides alone anyway


def _sliced_and_strict() -> tuple[Counter, Counter, Counter, Counter]:
    """A token rate and a concurrency counter each leased here (sliced), and each strict."""
    return (rate("k:tk", 1_000_000, 5000, MONTH, cost=400, unit=TOKENS),
            rate("all:tk", 1_000_000, 0, MONTH, cost=400, unit=TOKENS),
            Counter(CONCURRENCY, "gk:{t:a}:k:cc", "{t:a}", 8, 600.0, 1, REQUESTS, 0.0, 2, 5.0),
            Counter(CONCURRENCY, "gk:{t:a}:all:cc", "{t:a}", 8, 600.0, 1, REQUESTS))


async def test_settle_moves_slices_here_and_sends_the_rest_in_one_call(redis_port: int) -> None:
    store = await fresh(redis_port)
    leased = LeasedCounters(store)
    tokens, strict_tokens, here, there = _sliced_and_strict()
    await store.connect()  # every script loaded: no NOSCRIPT retry in the count
    try:
        answers = await leased.apply((tokens, strict_tokens, here, there), time.time())
        assert all(a.allowed for a in answers)
        slots = [a.lease for a in answers if a.lease is not None]
        assert len(slots) == 2
        before = await calls(store, "evalsha")
        released = await leased.settle(slots, [(tokens, 400, 100), (strict_tokens, 400, 100)],
                                       time.time())
        assert released == 2
        assert await calls(store, "evalsha") == before + 1  # the remote slot and correction
        assert leased.held(tokens.key) == 5000 - 100
        assert await _charged(store, strict_tokens) == 100
        assert await slots_held(store.redis, there.key) == 0
    finally:
        await leased.close()


async def test_settle_later_moves_slices_here_and_queues_the_rest_for_the_next_apply(
        redis_port: int) -> None:
    store = await fresh(redis_port)
    leased = LeasedCounters(store)
    tokens, strict_tokens, here, there = _sliced_and_strict()
    await store.connect()
    try:
        answers = await leased.apply((tokens, strict_tokens, here, there), time.time())
        slots = [a.lease for a in answers if a.lease is not None]
        assert len(slots) == 2
        before = await calls(store, "evalsha")
        leased.settle_later(slots, [(tokens, 400, 100), (strict_tokens, 400, 100)], time.time())
        assert leased.held(tokens.key) == 5000 - 100  # moved here, at once
        assert await calls(store, "evalsha") == before  # the rest waits for a ride
        queued = store._settles.waiting[""]
        assert queued.keys() == [there.key, strict_tokens.key]  # the local slot stayed here
        await leased.apply((strict_tokens._replace(cost=0),), time.time())  # carries it
        assert await calls(store, "evalsha") == before + 1
        assert await _charged(store, strict_tokens) == 100
        assert await slots_held(store.redis, there.key) == 0
    finally:
        await leased.close()
