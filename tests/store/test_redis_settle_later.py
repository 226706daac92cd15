"""A response's end queued (``settle_later``) rides inside the next apply to its hash tag: one
EVALSHA per request, a slot given back free for the very request that carries it, tokens
corrected exactly as ``settle`` corrects them. What no apply carries goes out from the timer or
at ``close``; a failed call's settles are not sent again. Against a real redis-server and the
session's three-primary Cluster, round trips counted by the server."""

from __future__ import annotations

import anyio
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from gatekeeper.breaker import Breaker
from gatekeeper.clock import ManualClock
from gatekeeper.errors import ConfigError, StoreError
from gatekeeper.limits.plan import (
    CONCURRENCY,
    QUOTA,
    RATE,
    REQUESTS,
    TOKENS,
    Counter,
    CounterAnswer,
    Lease,
)
from gatekeeper.store import store_from_url
from gatekeeper.store.guarded import GuardedCounters
from gatekeeper.store.leased import LeasedCounters
from gatekeeper.store.redis import RedisStore
from gatekeeper.store.redis_cluster import RedisClusterStore
from gatekeeper.store.redis_settles import MOST
from tests.store.conftest import empty_redis_store, slots_held
from tests.store.test_redis_cluster import evalsha_calls
from tests.store.test_redis_store import calls

pytestmark = pytest.mark.anyio

START = 1_700_000_000.0
TENANT, CLIENT = "{t:acme}", "{c:192.0.2.10}"
SLOT = Counter(CONCURRENCY, f"gk:{TENANT}:cc", TENANT, 1, 60.0, 1, REQUESTS)
TOKENS_RATE = Counter(RATE, f"gk:{TENANT}:tk", TENANT, 100, 3600.0, 50, TOKENS)
REQUESTS_RATE = Counter(RATE, f"gk:{TENANT}:rq", TENANT, 1000, 3600.0, 1, REQUESTS)
PLAN = (REQUESTS_RATE, TOKENS_RATE, SLOT)


def lease_of(answers: list[CounterAnswer]) -> Lease:
    found = [a.lease for a in answers if a.lease is not None]
    assert len(found) == 1
    return found[0]


async def held(port: int, key: str) -> int:
    """Slots held in ``key``, read by a client of its own (after the store closed)."""
    client = Redis(port=port)
    try:
        return await slots_held(client, key)
    finally:
        await client.aclose()


async def test_each_request_is_one_evalsha_and_a_released_slot_is_free_for_the_next(
        redis_port: int) -> None:
    """One slot, 20 requests in a row: each apply carries the previous end, settles it first,
    then takes the slot; the token reservation (50) is corrected to the usage (2) each time."""
    store = await empty_redis_store(redis_port, settle_delay=1)
    try:
        await store.connect()
        await store.redis.config_resetstat()
        for i in range(20):
            answers = await store.apply(PLAN, START)
            assert all(a.allowed for a in answers), i
            # 100 tokens an hour: without the corrections the third request would be refused
            assert answers[1].remaining == 50 - 2 * i, i
            store.settle_later([lease_of(answers)], [(TOKENS_RATE, 50, 2)], START)
        flushed = store._settles.sent  # the timer only sends what waited a second
        assert await calls(store, "evalsha") == 20 + flushed and flushed <= 1
    finally:
        await store.close()
    assert await held(redis_port, SLOT.key) == 0  # the last end went out at close


async def test_an_idle_stores_queued_settle_goes_out_from_the_timer(redis_port: int) -> None:
    """No apply comes: the timer sends it (one EVALSHA of its own), with no close."""
    store = await empty_redis_store(redis_port, settle_delay=0.005)
    try:
        await store.connect()
        answers = await store.apply(PLAN, START)
        await store.redis.config_resetstat()
        store.settle_later([lease_of(answers)], [(TOKENS_RATE, 50, 0)], START)
        assert store._settles.waiting
        with anyio.fail_after(5):  # not a timing bar: a guard against a timer never firing
            while store._settles.waiting or store._settles._tasks:
                await anyio.sleep(0.002)
        assert store._settles.sent == 1
        assert await calls(store, "evalsha") == 1
        assert await slots_held(store.redis, SLOT.key) == 0
        again = await store.apply((TOKENS_RATE._replace(cost=100),), START)
        assert again[0].allowed  # the 50 reserved were handed back
    finally:
        await store.close()


async def test_close_sends_what_is_queued(redis_port: int) -> None:
    store = await empty_redis_store(redis_port, settle_delay=1)
    answers = await store.apply(PLAN, START)
    store.settle_later([lease_of(answers)], [(TOKENS_RATE, 50, 20)], START)
    await store.close()
    assert store._settles.sent == 1 and not store._settles.waiting
    assert await held(redis_port, SLOT.key) == 0
    store.settle_later([Lease(SLOT.key, 1)], [], START)  # after close: dropped, nothing sent
    assert not store._settles.waiting
    other = RedisStore(f"redis://127.0.0.1:{redis_port}/0", server_time=False)
    try:
        again = await other.apply((TOKENS_RATE._replace(cost=80),), START)
        assert again[0].allowed and again[0].remaining == 0  # 20 + 80: corrected once
    finally:
        await other.close()


async def test_a_failed_carrier_is_not_sent_again(redis_port: int) -> None:
    """A quota applied after its window ended is an error reply, after the settles riding
    along ran: they are dropped, not carried by the next apply (a refund sent twice would
    refund twice)."""
    store = await empty_redis_store(redis_port, settle_delay=1)
    try:
        answers = await store.apply(PLAN, START)
        store.settle_later([lease_of(answers)], [(TOKENS_RATE, 50, 0)], START)
        ended = Counter(QUOTA, f"gk:{TENANT}:day", TENANT, 10, 86_400.0, 1, REQUESTS,
                        START - 1)
        with pytest.raises(StoreError, match="window ended"):
            await store.apply((ended,), START)
        assert not store._settles.waiting
        await store.redis.config_resetstat()
        tokens = await store.apply((TOKENS_RATE._replace(cost=100),), START)
        assert tokens[0].allowed and tokens[0].remaining == 0  # refunded once: 100 left, not 150
        assert await calls(store, "evalsha") == 1
        assert await slots_held(store.redis, SLOT.key) == 0  # released by the carrier
    finally:
        await store.close()
    assert store._settles.sent == 0


async def test_a_full_queue_goes_out_at_once(redis_port: int) -> None:
    store = await empty_redis_store(redis_port, settle_delay=1)
    try:
        many = Counter(CONCURRENCY, f"gk:{TENANT}:many", TENANT, MOST + 1, 60.0, 1, REQUESTS)
        leases = [lease_of(await store.apply((many,), START)) for _ in range(MOST + 1)]
        for lease in leases:
            store.settle_later([lease], [], START)
        assert len(store._settles.waiting[""]) == 1  # the first MOST went out together
        await store._settles.drain()
        assert store._settles.sent == 2
        assert await slots_held(store.redis, many.key) == 0
    finally:
        await store.close()


async def test_the_guarded_and_leased_wrappers_queue_a_strict_end(redis_port: int) -> None:
    """As the middleware stacks them: the end reaches the store's queue and rides along."""
    store = await empty_redis_store(redis_port, settle_delay=1)
    counters = GuardedCounters(LeasedCounters(store, lambda: START),
                               Breaker(ManualClock(START).monotonic))
    try:
        await store.connect()
        await store.redis.config_resetstat()
        for _ in range(5):
            answers = await counters.apply(PLAN, START)
            assert all(a.allowed for a in answers)
            counters.settle_later([lease_of(answers)], [(TOKENS_RATE, 50, 10)], START)
        assert await calls(store, "evalsha") == 5 + store._settles.sent
    finally:
        await counters.close()
    assert await held(redis_port, SLOT.key) == 0


def test_settle_delay_is_a_url_option_and_a_bad_one_is_named() -> None:
    store = store_from_url("redis://127.0.0.1:1/0?socket_timeout=0.5&settle_delay=0.02")
    assert isinstance(store, RedisStore)
    assert store._settles.delay == 0.02 and "settle_delay" not in store.url
    for bad in ("0", "2", "nan", "soon"):
        with pytest.raises(ConfigError, match="settle_delay"):
            store_from_url(f"redis://127.0.0.1:1/0?settle_delay={bad}")


# --- Cluster ---------------------------------------------------------------------------------

async def test_on_cluster_each_tags_settles_ride_with_an_apply_to_that_tag(
        redis_cluster_url: str) -> None:
    store = await empty_redis_store(redis_cluster_url, settle_delay=1)
    assert isinstance(store, RedisClusterStore)
    there = Counter(CONCURRENCY, f"gk:{CLIENT}:cc", CLIENT, 1, 60.0, 1, REQUESTS)
    plan = (*PLAN, there)
    try:
        await store.connect()
        await store.redis.config_resetstat(target_nodes=RedisCluster.PRIMARIES)
        for _ in range(5):
            answers = await store.apply(plan, START)
            assert all(a.allowed for a in answers)  # both slots freed by their own tag's apply
            leases = [a.lease for a in answers if a.lease is not None]
            store.settle_later(leases, [(TOKENS_RATE, 50, 10)], START)
            assert sorted(store._settles.waiting) == sorted(["t:acme", "c:192.0.2.10"])
        assert await evalsha_calls(store) == 2 * 5 + store._settles.sent  # one per tag
        # a plan on one tag carries only that tag's: the other waits for the timer or close
        await store.apply((REQUESTS_RATE,), START)
        assert list(store._settles.waiting) == ["c:192.0.2.10"]
        await store._settles.drain()
        assert await slots_held(store.redis, there.key) == 0
        assert await slots_held(store.redis, SLOT.key) == 0
    finally:
        await store.close()


async def test_on_cluster_close_sends_one_settle_per_tag(redis_cluster_url: str) -> None:
    store = await empty_redis_store(redis_cluster_url, settle_delay=1)
    assert isinstance(store, RedisClusterStore)
    there = Counter(CONCURRENCY, f"gk:{CLIENT}:cc", CLIENT, 1, 60.0, 1, REQUESTS)
    answers = await store.apply((SLOT, there), START)
    await store.connect()
    await store.redis.config_resetstat(target_nodes=RedisCluster.PRIMARIES)
    store.settle_later([a.lease for a in answers if a.lease is not None], [], START)
    evalsha_before = await evalsha_calls(store)
    await store._settles.drain()
    assert store._settles.sent == 2
    assert await evalsha_calls(store) == evalsha_before + 2
    assert await slots_held(store.redis, SLOT.key) == 0
    assert await slots_held(store.redis, there.key) == 0
    await store.close()
