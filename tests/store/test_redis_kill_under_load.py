"""Kill the Redis server during a load run (issue 16): gatekeeper served by a real uvicorn on
Redis, eight httpx clients sending without pause, redis-server killed with SIGKILL mid-run and
started again on the same port and directory (AOF, as the README asks, so the key records are
still there). Under fail_closed every answer while it is down is a quick 503
``store_unavailable`` and none reaches the app; under fail_open the key's tight limit keeps
holding, counted in the process; both go back to Redis when it returns; never a 500."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import anyio
import pytest

from gatekeeper import Gatekeeper, key_admin
from gatekeeper.policy.load import compile_policy
from gatekeeper.store.redis import RedisStore
from tests.conftest import PEPPER
from tests.redis_nodes import AOF, RedisNode
from tests.serving import serving
from tests.store.conftest import SLACK
from tests.store.phased_load import PhaseApp, PhasedLoad, judge, through_an_outage

pytestmark = pytest.mark.anyio

TIMEOUT = 0.5
"""The store's command and connect timeouts here: short, with room for a loaded machine."""
LIMIT = 20
"""fail_open: the key's tenant may make this many requests an hour, whoever counts them."""


def policy(mode: str) -> dict[str, object]:
    limit = f"{LIMIT}/hour" if mode == "fail_open" else "1000000/hour"
    return {"routes": {"protect": ["/v1/*"]}, "keys": {"cache_ttl": 0.5},
            "on_store_error": mode, "tenants": {"acme": {"limits": {"requests": limit}}}}


async def evalsha_calls(node: RedisNode) -> int:
    stats = node.info("commandstats").get("cmdstat_evalsha", "calls=0")
    return int(stats.split(",")[0].removeprefix("calls="))


@pytest.mark.parametrize("mode", ["fail_closed", "fail_open"])
async def test_kill_redis_during_a_load_run_then_start_it_again(tmp_path: Path,
                                                                 mode: str) -> None:
    compiled = compile_policy(policy(mode))
    with RedisNode(tmp_path / "redis", persistence=AOF) as node:
        await anyio.to_thread.run_sync(node.start)
        admin = RedisStore(node.url, **SLACK)
        key, _ = await key_admin.create_key(admin, PEPPER, compiled, "acme", time.time())
        await admin.close()
        app = PhaseApp()
        # its own store, first used on the server's event loop (redis-py binds to one loop)
        store = RedisStore(node.url, socket_timeout=TIMEOUT, connect_timeout=TIMEOUT)
        gk = Gatekeeper(app, compiled, store=store, pepper=PEPPER)
        fail_open = gk.metrics.registry.get_sample_value
        with serving(gk, lifespan="on") as base:
            load = PhasedLoad(f"{base}/v1/models", key)
            restarted: list[int] = []

            async def restart() -> None:
                await anyio.sleep(1.5)
                load.phase = "restarting"
                await anyio.to_thread.run_sync(node.start)
                restarted.append(await evalsha_calls(node))  # commandstats start afresh

            # SIGKILL; AOF everysec: what it acknowledged is already in the kernel
            recovery = await through_an_outage(load, node.kill, restart, mode, fail_open)
            decided_by_redis = await evalsha_calls(node) - restarted[0]

    summary = judge(load, app, mode, LIMIT, TIMEOUT)
    print(f"\n{mode}: {summary}; back {recovery:.2f} s after the restart")
    # exactly the allowed requests reached the app
    assert len(app.arrivals) == [r.status for r in load.replies].count(200)
    # after the restart the limits are counted in Redis again
    assert decided_by_redis >= len(load.of("recovered")) > 0


async def test_after_a_restart_no_pooled_connection_fails(tmp_path: Path) -> None:
    """Connections the dead server closed are replaced when next taken from the pool, not
    used: with redis-py's maintenance notifications on ("auto"), its check for them is
    skipped, and each stale connection failed one request after Redis was back."""
    with RedisNode(tmp_path / "redis") as node:
        await anyio.to_thread.run_sync(node.start)
        store = RedisStore(node.url, socket_timeout=TIMEOUT, connect_timeout=TIMEOUT)
        try:
            await asyncio.gather(*(store.get_key("k") for _ in range(8)))  # 8 connections
            node.kill()
            await anyio.to_thread.run_sync(node.start)
            await anyio.sleep(0.1)  # the loop has seen the old connections closed
            results = await asyncio.gather(*(store.get_key("k") for _ in range(8)),
                                           return_exceptions=True)
            assert results == [None] * 8
        finally:
            await store.close()
