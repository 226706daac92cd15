"""Key record changes reach every replica: published on every write, ``ALL`` first and after a
lost subscription, a version counter that moves with every write. On the session's own server
and cluster."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator

import anyio
import pytest

from gatekeeper import Gatekeeper, compile_policy, key_admin, new_key
from gatekeeper.principal import KeyStatus
from gatekeeper.store.redis import RedisStore
from gatekeeper.store.redis_changes import ALL
from tests.conftest import Recorder, asgi_request
from tests.store.conftest import empty_redis_store
from tests.store.test_redis_gatekeeper import auth

pytestmark = pytest.mark.anyio

PEPPER = b"changes-pepper-0123456789abcdef0123456789"


async def next_change(changes: AsyncGenerator[str, None]) -> str:
    with anyio.fail_after(3):
        return await anext(changes)


@pytest.mark.parametrize("where", ["redis_port", "redis_cluster_url"])
async def test_every_write_reaches_a_listening_replica(request: pytest.FixtureRequest,
                                                       where: str) -> None:
    cli = await empty_redis_store(request.getfixturevalue(where))
    server = await empty_redis_store(request.getfixturevalue(where))
    changes = server.key_changes()
    try:
        assert await next_change(changes) == ALL  # subscribed: forget what was cached before
        assert await server.keys_version() == 0
        rec = new_key(PEPPER, "acme", 1_700_000_000.0)[1]
        await cli.create_key(rec)
        assert await next_change(changes) == rec.key_id
        await cli.update_key(rec.with_changes(status=KeyStatus.REVOKED), 0)
        assert await next_change(changes) == rec.key_id
        assert await server.keys_version() == 2
    finally:
        await changes.aclose()
        await cli.close()
        await server.close()


async def test_a_lost_subscription_comes_back_saying_all(
        redis_store: RedisStore, caplog: pytest.LogCaptureFixture) -> None:
    """Messages sent while a subscriber is away are lost: it says so with ALL."""
    changes = redis_store.key_changes()
    try:
        assert await next_change(changes) == ALL
        killer = RedisStore(redis_store.url)
        await killer.redis.client_kill_filter(_type="pubsub")
        await killer.close()
        with caplog.at_level(logging.WARNING, logger="gatekeeper"):
            assert await next_change(changes) == ALL
        assert "key change notifications lost" in caplog.text
        rec = new_key(PEPPER, "acme", 1_700_000_000.0)[1]
        await redis_store.create_key(rec)
        assert await next_change(changes) == rec.key_id
    finally:
        await changes.aclose()


async def test_a_replica_following_changes_refuses_a_revoked_key_within_a_second(
        redis_port: int) -> None:
    """The middleware follows the store's key changes from startup: with a cache_ttl of a
    minute, a revoke made by another process (the CLI) still lands at once."""
    cli, server = await empty_redis_store(redis_port), await empty_redis_store(redis_port)
    policy = compile_policy({"routes": {"protect": ["/v1/*"]}, "keys": {"cache_ttl": 60},
                             "tenants": {"acme": {}}})
    gk = Gatekeeper(Recorder(), policy, store=server, pepper=PEPPER)
    key, record = await key_admin.create_key(cli, PEPPER, policy, "acme", time.time())
    try:
        await gk.startup()
        # guarded, then leased
        assert gk.runtime.counters.store.store is server  # type: ignore[attr-defined]
        assert (await asgi_request(gk, "/v1/models", auth(key)))[0]["status"] == 200
        await key_admin.set_status(cli, record.key_id, KeyStatus.REVOKED, time.time())
        started = time.monotonic()
        with anyio.fail_after(1):
            while (await asgi_request(gk, "/v1/models", auth(key)))[0]["status"] == 200:
                await anyio.sleep(0.01)
        assert time.monotonic() - started < 1.0
    finally:
        await gk.shutdown()
        await cli.close()
