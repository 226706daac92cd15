"""GuardedCounters forwards ``settle`` as one call to the store it guards, and keeps the
outage rules of ``release`` and ``reconcile``: a slot taken locally (fail_open) goes back to
the local store; a store's slot is given back to the store even with the breaker open; a
correction counts where limits count now. Against a real redis-server, and a dead port."""

from __future__ import annotations

import pytest

from gatekeeper.breaker import Breaker
from gatekeeper.clock import ManualClock
from gatekeeper.errors import StoreError
from gatekeeper.limits.plan import CONCURRENCY, RATE, REQUESTS, TOKENS, Counter, Lease
from gatekeeper.store.guarded import FAIL_OPEN, GuardedCounters
from gatekeeper.store.redis import RedisStore
from tests.redis_server import free_port
from tests.store.conftest import empty_redis_store
from tests.store.test_redis_store import calls

pytestmark = pytest.mark.anyio

START = 1_700_000_000.0
SLOT = Counter(CONCURRENCY, "gk:{t:acme}:cc", "{t:acme}", 1, 60.0, 1, REQUESTS)
TOKENS_RATE = Counter(RATE, "gk:{t:acme}:tk", "{t:acme}", 100, 3600.0, 50, TOKENS)


def dead_store() -> RedisStore:
    """A store on a port nobody listens on: every call fails at once (connection refused)."""
    return RedisStore(f"redis://127.0.0.1:{free_port()}/0", server_time=False)


async def test_settle_is_forwarded_as_one_call(redis_port: int) -> None:
    store = await empty_redis_store(redis_port)
    guarded = GuardedCounters(store, Breaker(ManualClock(START).monotonic))
    try:
        await store.connect()  # scripts loaded, as at a server's startup
        answers = await guarded.apply((SLOT, TOKENS_RATE), START)
        lease = answers[0].lease
        assert lease is not None
        await store.redis.config_resetstat()
        assert await guarded.settle([lease], [(TOKENS_RATE, 50, 10)], START) == 1
        assert await calls(store, "evalsha") == 1
        again = await guarded.apply((SLOT, TOKENS_RATE._replace(cost=90)), START)
        assert all(a.allowed for a in again) and again[1].remaining == 0  # 10 + 90 used
    finally:
        await guarded.close()


async def test_failing_open_a_local_slot_and_correction_settle_locally() -> None:
    clock = ManualClock(START)
    guarded = GuardedCounters(dead_store(), Breaker(clock.monotonic), FAIL_OPEN)
    try:
        answers = await guarded.apply((SLOT, TOKENS_RATE), START)  # the store fails: local
        assert guarded.failing_open
        lease = answers[0].lease
        assert lease is not None
        assert not (await guarded.apply((SLOT,), START))[0].allowed  # the local slot is held
        # no call to the dead store: both go to the local store, and nothing raises
        assert await guarded.settle([lease], [(TOKENS_RATE, 50, 0)], START) == 1
        assert await guarded.settle([lease], (), START) == 0  # once
        local = guarded.local.apply_now((SLOT, TOKENS_RATE._replace(cost=100)), START)
        assert [a.allowed for a in local] == [True, True]  # the slot is free, the tokens back
    finally:
        await guarded.close()


async def test_a_store_slot_is_given_back_even_with_the_breaker_open() -> None:
    """The breaker is open (the store failed), yet the store's slot is still tried: a slot
    not given back holds its place until its lease ends. The failure is a StoreError."""
    clock = ManualClock(START)
    breaker = Breaker(clock.monotonic)
    for _ in range(breaker.threshold):
        breaker.failure()
    assert not breaker.allow()
    guarded = GuardedCounters(dead_store(), breaker, FAIL_OPEN)
    try:
        with pytest.raises(StoreError, match="settle"):
            await guarded.settle([Lease(SLOT.key, 7)], [], START)
    finally:
        await guarded.close()


async def test_a_correction_with_the_breaker_open_counts_locally() -> None:
    clock = ManualClock(START)
    breaker = Breaker(clock.monotonic)
    for _ in range(breaker.threshold):
        breaker.failure()
    guarded = GuardedCounters(dead_store(), breaker, FAIL_OPEN)
    try:
        guarded.local.apply_now((TOKENS_RATE,), START)  # 50 reserved locally
        assert await guarded.settle((), [(TOKENS_RATE, 50, 100)], START) == 0  # no raise
        assert not guarded.local.apply_now((TOKENS_RATE._replace(cost=1),), START)[0].allowed
    finally:
        await guarded.close()
