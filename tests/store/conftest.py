"""Store fixtures: one throwaway Redis server and one Redis Cluster per test session (see
``tests/redis_server.py``), emptied before each test that uses them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TypedDict

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from gatekeeper.store.redis import RedisStore
from gatekeeper.store.redis_cluster import RedisClusterStore
from gatekeeper.store.redis_counters import slots_state
from tests.redis_server import redis_cluster, redis_server


class Timeouts(TypedDict):
    socket_timeout: float
    connect_timeout: float


SLACK: Timeouts = {"socket_timeout": 5.0, "connect_timeout": 5.0}


@pytest.fixture(scope="session")
def redis_port() -> Iterator[int]:
    with redis_server() as port:
        yield port


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """A real three-primary Redis Cluster, seeded by two of its nodes."""
    with redis_cluster() as ports:
        yield f"redis+cluster://127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}"


async def empty_redis_store(where: int | str, *, server_time: bool = False,
                            settle_delay: float | None = None) -> RedisStore:
    """A RedisStore on the test server (its port) or cluster (its URL), emptied first.
    ``server_time=False`` by default: the contract suites inject time. Timeouts of seconds,
    not the defaults' milliseconds: these tests are about what is counted, on a shared machine
    whose load can starve the event loop (the timeout tests use the defaults).
    ``settle_delay``: how long a queued settle waits for an apply to carry it."""
    url = f"redis://127.0.0.1:{where}/0" if isinstance(where, int) else where
    if settle_delay is not None:
        url += f"?settle_delay={settle_delay}"
    store = RedisStore(url, server_time=server_time, **SLACK) \
        if isinstance(where, int) else RedisClusterStore(url, server_time=server_time, **SLACK)
    await store.redis.flushdb()
    return store


@pytest.fixture
async def redis_store(redis_port: int) -> AsyncIterator[RedisStore]:
    store = await empty_redis_store(redis_port)
    try:
        yield store
    finally:
        await store.close()


async def slots_held(client: Redis | RedisCluster, key: str) -> int:
    """Leases held in a concurrency counter's value (``redis_counters.SLOTS_HEAD``); 0 when it
    is absent."""
    raw = await client.get(key)
    if raw is None:
        return 0
    assert isinstance(raw, bytes)
    return len(slots_state(raw)[3])
