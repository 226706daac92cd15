"""Resale signals shared across replicas through Redis: two Gatekeeper instances on one real
redis-server (their own store objects, as two processes have), each serving half of a key's
fan-out. Each alone stays under the flag threshold; after one batch each (off the request
path, one round trip) the fleet's counts flag the key. The request path itself sends nothing
for the score."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis

from gatekeeper import AuditLog, Gatekeeper, ManualClock, MemoryStore, SQLiteStore, key_admin
from gatekeeper.decision import Decision
from gatekeeper.policy.load import compile_policy
from gatekeeper.resale.event import Event
from gatekeeper.resale.stage import ResaleMemory
from gatekeeper.store.redis import RedisStore
from gatekeeper.store.redis_changes import CHANNEL
from gatekeeper.store.signals import SignalStore
from gatekeeper.types import Scope
from tests.conftest import PEPPER, Recorder, asgi_request
from tests.redis_server import free_port, redis_server
from tests.store.conftest import SLACK

pytestmark = pytest.mark.anyio

T0 = 1_800_000_000.0
PATH = "/v1/chat/completions"
"""Not a model listing: only the fan-out signals score."""
POLICY: dict[str, Any] = {
    "routes": {"protect": ["/v1/*"]}, "tenants": {"acme": {}}, "keys": {"cache_ttl": 60},
    "resale": {"mode": "enforce", "flag_header": True,
               # networks: nothing up to 4, then 5 points each: 4 per replica score 0,
               # 8 across the fleet score 20
               "thresholds": {"flag": 15, "throttle": None, "block": None, "suspend": None}}}
SIGNAL_COMMANDS = ("pfadd", "pfcount", "incrby", "mget", "expire")


@pytest.fixture(scope="module")
def redis_port() -> Iterator[int]:
    with redis_server() as port:
        yield port


@pytest.fixture
async def server(redis_port: int) -> AsyncIterator[Redis]:
    client = Redis(port=redis_port)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


class Replica:
    """One Gatekeeper with a store object of its own on the shared server, on a ManualClock,
    its batch task held back so the test runs each batch itself."""

    def __init__(self, port: int, policy: Any) -> None:
        self.clock = ManualClock(T0)
        self.store = RedisStore(f"redis://127.0.0.1:{port}/0", server_time=False, **SLACK)
        self.decisions: list[Decision] = []
        self.gk = Gatekeeper(Recorder(), policy, store=self.store, pepper=PEPPER,
                             clock=self.clock, observer=self._observe)
        self.gk.resale.every = 3600.0

    def _observe(self, scope: Scope, decision: Decision, now: float) -> None:
        self.decisions.append(decision)

    async def request(self, key: str, address: str) -> bytes | None:
        """The request's ``x-gatekeeper-resale`` header (None: the score let it pass as is)."""
        sent = await asgi_request(self.gk, PATH, [(b"authorization", f"Bearer {key}".encode())],
                                  client=(address, 40000))
        assert sent[0]["status"] == 200
        self.clock.advance(1.0)
        return dict(sent[0]["headers"]).get(b"x-gatekeeper-resale")


@pytest.fixture
async def replicas(server: Redis, redis_port: int) -> AsyncIterator[tuple[Replica, Replica,
                                                                          str]]:
    policy = compile_policy(POLICY)
    a, b = Replica(redis_port, policy), Replica(redis_port, policy)
    key, _ = await key_admin.create_key(a.store, PEPPER, policy, "acme", T0 - 60)
    try:
        yield a, b, key
    finally:
        await a.gk.shutdown()
        await b.gk.shutdown()


async def test_a_fan_out_split_between_two_replicas_is_flagged_after_one_batch(
        replicas: tuple[Replica, Replica, str]) -> None:
    a, b, key = replicas
    for i in range(4):
        assert await a.request(key, f"198.18.{i}.7") is None
    for i in range(4, 8):
        assert await b.request(key, f"198.18.{i}.7") is None
    # each replica alone: 4 networks, at the signal's allow, scores 0
    assert await b.request(key, "198.18.7.7") is None
    assert b.decisions[-1].action == "allow"

    assert await a.gk.resale.share() == 1
    assert await b.gk.resale.share() == 1  # reads A's four networks and its own four
    assert await b.request(key, "198.18.7.7") == b"flag"
    state = b.gk.resale.tracker.get(b.decisions[-1].key_id or "")
    assert state is not None and state.scored is not None
    assert state.scored.reasons(1) == ["networks=8 (+20)"]

    # A read the fleet before B's batch: its next request is judged on four, then its next
    # batch brings B's in (one request and one batch of lag)
    assert await a.request(key, "198.18.0.7") is None
    assert await a.gk.resale.share() == 1
    assert await a.request(key, "198.18.0.7") == b"flag"


async def test_the_batch_is_one_round_trip_and_requests_send_nothing_for_the_score(
        replicas: tuple[Replica, Replica, str], server: Redis) -> None:
    a, _, key = replicas
    assert await a.request(key, "198.18.0.7") is None  # starts it
    while not (await server.pubsub_numsub(CHANNEL))[0][1]:
        await anyio.sleep(0.01)  # its follower subscribed (and forgot every cached key)
    assert await a.request(key, "198.18.0.7") is None  # caches the key
    await a.gk.resale.share()
    await server.config_resetstat()
    before = await _stats(server)
    for i in range(12):
        await a.request(key, f"198.18.{i}.7")
    after = await _stats(server)
    assert {name: after[name] - before.get(name, 0) for name in after
            if name not in ("info", "config|resetstat") and after[name] != before.get(name, 0)
            } == {}, "a request sent a command"

    reads = await _reads(server)
    assert await a.gk.resale.share() == 1
    assert await _reads(server) - reads == 2, "the batch took more than one round trip " \
        "(the second INFO is the other read)"
    done = await _stats(server)
    sent = {name: done.get(name, 0) - after.get(name, 0) for name in SIGNAL_COMMANDS}
    # addresses, networks and requests written (countries, agents, users, models: none here),
    # and read back in the same pipeline
    assert sent == {"pfadd": 2, "expire": 3, "incrby": 1, "pfcount": 2, "mget": 1}


async def test_the_memory_and_sqlite_stores_share_nothing_and_do_no_io(tmp_path: Path) -> None:
    for store in (MemoryStore(), SQLiteStore(str(tmp_path / "keys.db"), "sqlite:///keys.db")):
        assert not isinstance(store, SignalStore)
        gk = Gatekeeper(Recorder(), compile_policy(POLICY), store=store, pepper=PEPPER,
                        clock=ManualClock(T0))
        assert gk.resale.signals is None
        assert await gk.resale.share() == 0


async def test_a_dead_store_loses_one_batch_says_so_and_answers_on(
        caplog: pytest.LogCaptureFixture) -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0")  # nobody listens there
    policy = compile_policy(POLICY)
    memory = ResaleMemory(policy, store, AuditLog(), clock=lambda: T0)
    memory.tracker.observe(Event(T0, "kid", "192.0.2.1"), policy.resale)
    try:
        with caplog.at_level(logging.WARNING, "gatekeeper"):
            assert await memory.share() == 0
        assert "resale signals not shared (1 keys): StoreError" in caplog.text
        assert await memory.share() == 0  # sent (and lost): not sent again
    finally:
        await store.close()


async def _stats(server: Redis) -> dict[str, int]:
    stats = await server.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


async def _reads(server: Redis) -> int:
    return int((await server.info("stats"))["total_reads_processed"])
