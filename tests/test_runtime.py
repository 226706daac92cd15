"""One compiled runtime per request: a reload swaps it whole, and no request ever sees a mix.

Policy A disables acme and reads the tenant from ``x-tenant-a``; policy B enables acme and
reads ``x-tenant-b``. A request with acme's key and ``x-tenant-a: globex`` is refused
``tenant_disabled`` under A and allowed under B; only a mix (B's tenants with A's header
reader) would answer ``tenant_mismatch``. Every lookup yields to the event loop, so reloads
land in the middle of requests.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from gatekeeper import (
    ConfigError,
    Gatekeeper,
    MemoryStore,
    compile_policy,
    key_admin,
)
from gatekeeper.keys import KeyRecord
from tests.conftest import PEPPER, Recorder

pytestmark = pytest.mark.anyio


def _policy(acme_disabled: bool, header: str) -> dict[str, Any]:
    return {"routes": {"protect": ["/v1/*"]}, "keys": {"cache_ttl": 0},
            "request_tenant": {"header": header},
            "tenants": {"acme": {"disabled": acme_disabled}, "globex": {}}}


A = _policy(True, "x-tenant-a")
B = _policy(False, "x-tenant-b")


class YieldingStore(MemoryStore):
    """A memory store that suspends on every read, as a network store does."""

    async def get_key(self, key_id: str) -> KeyRecord | None:
        await asyncio.sleep(0)
        return await super().get_key(key_id)


async def test_reloads_under_concurrent_requests_never_mix_two_policies() -> None:
    store = YieldingStore()
    key, _ = await key_admin.create_key(store, PEPPER, compile_policy(A), "acme", time.time())
    recorder = Recorder()
    gk = Gatekeeper(recorder, A, store=store, pepper=PEPPER)
    compiled = [compile_policy(A), compile_policy(B)]
    answers: Counter[str] = Counter()
    stop = asyncio.Event()

    async def reloader() -> None:
        n = 0
        while not stop.is_set():
            gk.reload(compiled[n % 2])
            n += 1
            await asyncio.sleep(0)

    async def client() -> None:
        transport = httpx.ASGITransport(app=gk, client=("192.0.2.10", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://gk.test") as c:
            for _ in range(150):
                response = await c.get("/v1/models", headers={
                    "authorization": f"Bearer {key}", "x-tenant-a": "globex"})
                answers["ok" if response.status_code == 200
                        else response.json()["error"]["code"]] += 1

    task = asyncio.create_task(reloader())
    await asyncio.gather(*(client() for _ in range(8)))
    stop.set()
    await task
    assert set(answers) <= {"ok", "tenant_disabled"}, answers
    assert answers["ok"] > 0 and answers["tenant_disabled"] > 0, answers  # both policies ran
    assert len(recorder.paths) == answers["ok"]


async def test_a_reload_is_validated_whole_and_keeps_the_old_runtime_on_error() -> None:
    gk = Gatekeeper(Recorder(), A, store=MemoryStore(), pepper=PEPPER)
    before = gk.runtime
    with pytest.raises(Exception, match=r"tenants\.acme\.allowed_networks\[0\]"):
        gk.reload({"tenants": {"acme": {"allowed_networks": ["10.0.0/8"]}}})
    with pytest.raises(ConfigError, match="store"):
        gk.reload({**A, "store": "memory://other"})
    assert gk.runtime is before
    after = gk.reload(B)
    assert gk.runtime is after and gk.policy.request_tenant.header == "x-tenant-b"
    assert gk.metrics.registry.get_sample_value("gatekeeper_policy_tenants") == 2
