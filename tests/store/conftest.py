"""Store fixtures: one throwaway Redis server per test session (see ``tests/redis_server.py``),
emptied before each test that uses it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from gatekeeper.store.redis import RedisStore
from tests.redis_server import redis_server


@pytest.fixture(scope="session")
def redis_port() -> Iterator[int]:
    with redis_server() as port:
        yield port


async def empty_redis_store(port: int, *, server_time: bool = False) -> RedisStore:
    """A RedisStore on the test server, emptied first. ``server_time=False`` by default: the
    contract suites inject time."""
    store = RedisStore(f"redis://127.0.0.1:{port}/0", server_time=server_time)
    await store.redis.flushdb()
    return store


@pytest.fixture
async def redis_store(redis_port: int) -> AsyncIterator[RedisStore]:
    store = await empty_redis_store(redis_port)
    try:
        yield store
    finally:
        await store.close()
