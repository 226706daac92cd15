"""What Redis Cluster adds: a plan split by hash tag, its groups sent concurrently (one EVALSHA
each), all-or-nothing across slots by refunding the groups that allowed; exact counts across
two replicas; scripts loaded on every primary. On the session's real three-primary cluster."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError

from gatekeeper.errors import StoreError
from gatekeeper.limits.plan import CONCURRENCY, QUOTA, RATE, REQUESTS, TOKENS, Counter
from gatekeeper.store.redis_cluster import RedisClusterStore
from tests.store.conftest import SLACK, empty_redis_store

pytestmark = pytest.mark.anyio

START = 1_700_000_000.0
TENANT, CLIENT = "{t:acme}", "{c:192.0.2.10}"


@pytest.fixture
async def store(redis_cluster_url: str) -> AsyncIterator[RedisClusterStore]:
    made = await empty_redis_store(redis_cluster_url)
    assert isinstance(made, RedisClusterStore)
    try:
        yield made
    finally:
        await made.close()


def counter(kind: str, tag: str, name: str, limit: int, period: float = 60.0,
            expires: float = 0.0) -> Counter:
    return Counter(kind, f"gk:{tag}:{name}", tag, limit, period, 1, REQUESTS, expires)


async def evalsha_calls(store: RedisClusterStore) -> int:
    assert isinstance(store.redis, RedisCluster)
    stats = await store.redis.info("commandstats", target_nodes=RedisCluster.PRIMARIES)
    return sum(int(node.get("cmdstat_evalsha", {}).get("calls", 0))
               for node in stats.values())


async def test_a_plan_over_two_slots_is_one_call_per_slot(store: RedisClusterStore) -> None:
    await store.connect()
    await store.redis.config_resetstat(target_nodes=RedisCluster.PRIMARIES)
    plan = (counter(RATE, TENANT, "k", 10), counter(CONCURRENCY, TENANT, "cc", 5),
            counter(RATE, CLIENT, "ip", 10))
    answers = await store.apply(plan, START)
    assert [a.allowed for a in answers] == [True, True, True]
    assert [a.remaining for a in answers] == [9, 4, 9]  # in plan order
    assert answers[1].lease is not None
    assert await evalsha_calls(store) == 2  # one per hash tag, sent together
    assert await store.release([answers[1].lease], START) == 1


async def test_a_settle_over_two_slots_is_one_call_per_slot(store: RedisClusterStore) -> None:
    tokens = Counter(RATE, f"gk:{TENANT}:tk", TENANT, 100, 60.0, 50, TOKENS)
    plan = (counter(CONCURRENCY, TENANT, "cc", 1), tokens, counter(CONCURRENCY, CLIENT, "cc", 1))
    answers = await store.apply(plan, START)
    leases = [a.lease for a in answers if a.lease is not None]
    assert len(leases) == 2
    await store.connect()
    await store.redis.config_resetstat(target_nodes=RedisCluster.PRIMARIES)
    assert await store.settle(leases, [(tokens, 50, 10)], START) == 2
    assert await evalsha_calls(store) == 2  # one per hash tag, sent together
    again = await store.apply(plan, START)
    assert all(a.allowed for a in again)  # both slots free again
    assert again[1].remaining == 100 - 10 - 50  # the tokens corrected in the tenant's slot


async def test_a_refusal_in_one_slot_gives_back_what_the_other_slot_charged(
        store: RedisClusterStore) -> None:
    key_rate = counter(RATE, TENANT, "k", 10)
    slots = counter(CONCURRENCY, TENANT, "cc", 5)
    day = counter(QUOTA, TENANT, "q", 100, 86_400.0, START + 3600)
    client = counter(RATE, CLIENT, "ip", 1)
    assert all(a.allowed for a in await store.apply((key_rate, slots, day, client), START))
    refused = await store.apply((key_rate, slots, day, client), START)
    assert [a.allowed for a in refused] == [True, True, True, False]
    assert all(a.lease is None for a in refused)
    # the tenant's slot saw one charge only: the refused plan's was given back
    after = await store.apply((key_rate, slots, day), START)
    assert [a.remaining for a in after] == [8, 3, 98]


@pytest.mark.parametrize("kind", [RATE, CONCURRENCY])
async def test_two_replicas_on_the_cluster_allow_exactly_50_of_200(redis_cluster_url: str,
                                                                   kind: str) -> None:
    one = await empty_redis_store(redis_cluster_url, server_time=True)
    two = RedisClusterStore(redis_cluster_url, **SLACK)
    plan = (counter(RATE, TENANT, "tenant", 1000, 3600.0),
            counter(kind, TENANT, "limited", 50, 3600.0), counter(RATE, CLIENT, "ip", 1000, 3600.0))
    now = time.time()
    try:
        results = await asyncio.gather(*(store.apply(plan, now)
                                         for _ in range(100) for store in (one, two)))
        assert sum(all(a.allowed for a in answers) for answers in results) == 50
        # refused plans were refunded in the client's slot too
        assert (await two.apply((plan[2],), now))[0].remaining == 1000 - 51
    finally:
        await one.close()
        await two.close()


async def test_a_flushed_script_is_loaded_again_on_the_cluster(store: RedisClusterStore) -> None:
    assert isinstance(store.redis, RedisCluster)
    plan = (counter(RATE, TENANT, "k", 5), counter(RATE, CLIENT, "ip", 5))
    await store.apply(plan, START)
    await store.redis.script_flush()  # on every primary
    answers = await store.apply(plan, START)
    assert [a.remaining for a in answers] == [3, 3]


async def test_a_failing_slot_gives_back_what_the_other_slot_charged(
        store: RedisClusterStore) -> None:
    client = counter(RATE, CLIENT, "ip", 5)
    stale = counter(QUOTA, TENANT, "q", 100, 86_400.0, START - 1)  # its window has ended
    with pytest.raises(StoreError) as info:
        await store.apply((stale, client), START)
    assert "window ended" in str(info.value)
    assert (await store.apply((client,), START))[0].remaining == 4  # charged once only


async def test_limits_and_costs_at_2_52_are_refused_before_they_lose_precision(
        store: RedisClusterStore) -> None:
    with pytest.raises(StoreError) as info:
        await store.apply((counter(RATE, TENANT, "huge", 2**52),), START)
    assert "2^52" in str(info.value)
    assert (await store.apply((counter(RATE, TENANT, "big", 2**52 - 1),), START))[0].allowed


async def test_after_a_failover_error_a_read_is_tried_twice_more_and_a_script_once(
        store: RedisClusterStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """redis-py may drop every connection of the client again while a retried command runs
    (a slot map read again, every fifth MOVED): a key read survives two such failures in a
    row, a script (which may have run) is sent at most twice."""
    real = RedisCluster.execute_command
    failures: list[str] = []

    async def failing(self: RedisCluster, *args: Any, **kwargs: Any) -> Any:
        if failures:
            failures.pop()
            raise ConnectionError("Connection lost")
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(RedisCluster, "execute_command", failing)
    failures[:] = ["a", "b"]
    assert await store.get_key("nobody") is None and not failures
    failures[:] = ["a", "b", "c"]
    with pytest.raises(StoreError):
        await store.get_key("nobody")
    assert not failures
    plan = (counter(RATE, TENANT, "k", 10),)
    failures[:] = ["a"]
    assert [a.remaining for a in await store.apply(plan, START)] == [9]
    failures[:] = ["a", "b"]
    with pytest.raises(StoreError):
        await store.apply(plan, START)
    assert failures == []
    assert [a.remaining for a in await store.apply(plan, START)] == [8]  # nothing was sent


async def test_connections_the_servers_closed_while_idle_fail_no_request(
        store: RedisClusterStore, redis_cluster_url: str) -> None:
    """What a failover leaves: pooled connections to a primary that is gone. A command on one
    fails once, redis-py reads the slot map again, and the store tries it once more."""
    plan = (counter(RATE, TENANT, "k", 10), counter(RATE, CLIENT, "ip", 10))
    assert [a.remaining for a in await store.apply(plan, START)] == [9, 9]
    assert await store.get_key("nobody") is None
    admin = RedisCluster.from_url(redis_cluster_url.replace("redis+cluster", "redis", 1)
                                  .split(",")[0])
    try:
        killed = await admin.client_kill_filter(_type="normal", skipme=True,
                                                target_nodes=RedisCluster.PRIMARIES)
    finally:
        await admin.aclose()
    # the store's connections: one per slot used, at least
    assert sum(cast("dict[str, int]", killed).values()) >= 2
    assert [a.remaining for a in await store.apply(plan, START)] == [8, 8]
    assert await store.get_key("nobody") is None
