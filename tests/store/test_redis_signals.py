"""The shared-signals capability on a real Redis server and a real Redis Cluster: each key's
values pooled in HyperLogLogs per bucket of its window, its requests in counters, one
pipelined batch written and read back, a key's names under one hash tag."""

from __future__ import annotations

import pytest

from gatekeeper.store.redis_signals import bucket_names
from gatekeeper.store.signals import KeySignals, SignalStore
from tests.store.conftest import empty_redis_store

pytestmark = pytest.mark.anyio

T0 = 1_800_000_000.0  # a whole number of minutes: bucket edges fall on T0 + 60 k
NOTHING = ((), (), (), (), (), ())
READ = (True, True, False, False, False, False)
"""Addresses and networks read back; the other dimensions the key never had."""


def signals(key_id: str, addresses: tuple[str, ...] = (), networks: tuple[str, ...] = (),
            requests: int = 0) -> KeySignals:
    return KeySignals(key_id, 60.0, 10, (addresses, networks, *NOTHING[2:]), requests, READ)


@pytest.mark.parametrize("where", ["redis_port", "redis_cluster_url"])
async def test_counts_pool_the_batches_and_follow_the_window(request: pytest.FixtureRequest,
                                                             where: str) -> None:
    store = await empty_redis_store(request.getfixturevalue(where))
    keys = [f"key{i}" for i in range(6)]  # on a cluster: spread over the nodes
    try:
        assert isinstance(store, SignalStore)
        first = [signals(k, ("a1", "a2"), ("n1",), 5) for k in keys]
        assert await store.share_signals(first, T0) == [(2, 1, 0, 0, 0, 0, 5)] * 6
        # another replica's batch a minute later: one new address, one seen before
        more = [signals(k, ("a2", "a3"), (), 2) for k in keys]
        assert await store.share_signals(more, T0 + 61) == [(3, 1, 0, 0, 0, 0, 7)] * 6
        # ten buckets of a minute: ten minutes on, the first batch's bucket is out
        assert await store.share_signals([signals(keys[0])], T0 + 600) == \
            [(2, 0, 0, 0, 0, 0, 2)]
        assert await store.share_signals([], T0 + 600) == []
        client = store.redis
        last = int((T0 + 61) // 60)
        for k in keys:  # a key's names share its tag: {r:<key id>}
            names = [*bucket_names(k, "a", 60.0, last, 2), *bucket_names(k, "n", 60.0, last, 2),
                     *bucket_names(k, "q", 60.0, last, 2)]
            assert all(name.startswith(f"gk:{{r:{k}}}:") for name in names)
            held = [await client.ttl(name) for name in names]
            # addresses in both buckets, networks in the first only, requests in both
            assert [t > 0 for t in held] == [True, True, True, False, True, True]
            assert all(t <= 660 for t in held)  # a window and a bucket
    finally:
        await store.close()


async def test_long_values_are_sent_as_digests_and_stay_distinct(redis_port: int) -> None:
    store = await empty_redis_store(redis_port)
    agents = tuple("Mozilla/5.0 " + "x" * 8000 + str(i) for i in range(3))
    key = KeySignals("kid", 60.0, 10, ((), (), (), agents, (), ()), 0,
                     (False, False, False, True, False, False))
    try:
        await store.redis.config_resetstat()
        assert await store.share_signals([key, key], T0) == [(0, 0, 0, 3, 0, 0, 0)] * 2
        stats = await store.redis.info("stats")
        assert int(stats["total_net_input_bytes"]) < 4000  # not 2 x 3 x 8 KB
    finally:
        await store.close()
