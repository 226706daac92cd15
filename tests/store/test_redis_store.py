"""What only the Redis store adds to the contract suites: one round trip per plan, recovery
from a forgotten script, exact counts across replicas, the server's clock, exact GCRA for large
limits, and failures as StoreErrors. Every test runs against the session's own redis-server."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from gatekeeper import KeyConflictError, StoreError, new_key
from gatekeeper.limits.plan import CONCURRENCY, QUOTA, RATE, REQUESTS, TOKENS, Counter, Plan
from gatekeeper.store.memory_counters import MemoryCounterStore
from gatekeeper.store.redis import PREFIX, RedisStore
from gatekeeper.store.redis_counters import RATE_VALUE, apply_args, rate_state, slots_state
from gatekeeper.store.redis_scripts import APPLY
from tests.redis_server import free_port, redis_server
from tests.store.conftest import SLACK, empty_redis_store

pytestmark = pytest.mark.anyio

START = 1_700_000_000.0
TAG = "{t:acme}"


def counter(kind: str, name: str, limit: int, period: float, cost: int = 1,
            unit: str = REQUESTS, expires: float = 0.0) -> Counter:
    return Counter(kind, f"gk:{TAG}:{name}", TAG, limit, period, cost, unit, expires)


def request_plan(now: float) -> Plan:
    """A key with request, token and concurrency limits and a daily token quota."""
    day_end = now - now % 86_400 + 86_400
    return (counter(RATE, "k:rq", 1000, 60.0), counter(RATE, "k:tk", 100_000, 60.0, 50, TOKENS),
            counter(CONCURRENCY, "k:cc", 100, 60.0),
            counter(QUOTA, "k:day", 10_000_000, 86_400.0, 50, TOKENS, day_end))


async def client_commands(store: RedisStore, action: Any) -> list[str]:
    """The commands clients sent while ``action`` ran, read from MONITOR on the server
    (commands a script runs inside the server are left out: they cost no round trip)."""
    seen: list[str] = []
    watcher = Redis.from_url(store.url)
    async with watcher.monitor() as monitor:
        await action()
        await store.redis.echo("monitor-done")
        while True:
            info = await monitor.next_command()
            command = info["command"].split(" ", 1)[0].upper()
            if command == "ECHO" and "monitor-done" in info["command"]:
                return seen
            if info["client_type"] != "lua":
                seen.append(command)
    await watcher.aclose()


async def calls(store: RedisStore, command: str) -> int:
    stats = await store.redis.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


# --- one round trip --------------------------------------------------------------------------

async def test_each_plan_is_one_evalsha_on_the_wire(redis_port: int) -> None:
    store = await empty_redis_store(redis_port, server_time=True)
    try:
        await store.connect()  # what a server does at startup: scripts loaded once
        await store.redis.config_resetstat()

        async def twenty_requests() -> None:
            for _ in range(20):
                answers = await store.apply(request_plan(time.time()), time.time())
                assert all(a.allowed for a in answers)
                assert answers[2].lease is not None

        sent = await client_commands(store, twenty_requests)
        assert sent == ["EVALSHA"] * 20  # one round trip per request, nothing else
        assert await calls(store, "evalsha") == 20
        # the end of the response is the second (and last) call: the slot given back and both
        # token reservations corrected in one settle
        plan = request_plan(time.time())
        lease = (await store.apply(plan, time.time()))[2].lease
        assert lease is not None

        async def settle() -> None:
            corrections = [(plan[1], 50, 20), (plan[3], 50, 70), (plan[0], 1, 1)]
            assert await store.settle([lease], corrections, time.time()) == 1

        assert await client_commands(store, settle) == ["EVALSHA"]
        after = await store.apply(plan, time.time())  # (the server's clock: rates refill)
        assert after[3].remaining == 10_000_000 - 20 * 50 - 70 - 50  # that one used 70, not 50

        async def nothing() -> None:
            assert await store.settle((), [(plan[1], 50, 50)], time.time()) == 0

        assert await client_commands(store, nothing) == []  # nothing to settle: no call
    finally:
        await store.close()


async def test_a_flushed_script_is_loaded_again_once(redis_store: RedisStore) -> None:
    plan = (counter(RATE, "r", 5, 60.0),)
    await redis_store.apply(plan, START)
    await redis_store.redis.script_flush()  # what a restart or a failover does
    await redis_store.redis.config_resetstat()
    answers = await redis_store.apply(plan, START)
    assert answers[0].allowed and answers[0].remaining == 3  # the count survived
    assert await calls(redis_store, "evalsha") == 2  # NOSCRIPT, then the call again
    assert await calls(redis_store, "script|load") == 1
    await redis_store.apply(plan, START)
    assert await calls(redis_store, "evalsha") == 3  # and from then on, one call


# --- replicas --------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", [RATE, QUOTA, CONCURRENCY])
async def test_two_replicas_200_concurrent_applies_against_50_allow_exactly_50(
        redis_port: int, kind: str) -> None:
    one = await empty_redis_store(redis_port, server_time=True)
    two = RedisStore(f"redis://127.0.0.1:{redis_port}/0", **SLACK)
    now = time.time()
    limited = {RATE: counter(RATE, "r", 50, 60.0),
               QUOTA: counter(QUOTA, "q", 50, 86_400.0, expires=now + 3600),
               CONCURRENCY: counter(CONCURRENCY, "c", 50, 60.0)}[kind]
    plan = (counter(RATE, "tenant", 1000, 3600.0), limited)  # server time runs: no refill
    try:
        results = await asyncio.gather(*(store.apply(plan, now)
                                         for _ in range(100) for store in (one, two)))
        assert sum(all(a.allowed for a in answers) for answers in results) == 50
        tenant = await two.apply((plan[0],), now)
        assert tenant[0].remaining == 1000 - 51  # refused plans charged the tenant nothing
    finally:
        await one.close()
        await two.close()


async def test_replicas_with_skewed_clocks_agree_on_the_servers_time(redis_port: int) -> None:
    behind = await empty_redis_store(redis_port, server_time=True)
    ahead = RedisStore(f"redis://127.0.0.1:{redis_port}/0", **SLACK)
    plan = (counter(RATE, "skew", 10, 60.0),)
    now = time.time()
    try:
        passed = 0
        for _ in range(8):  # an hour apart: had each used its own now, 16 would pass
            passed += (await behind.apply(plan, now - 1800))[0].allowed
            passed += (await ahead.apply(plan, now + 1800))[0].allowed
        assert passed == 10
        refused = (await ahead.apply(plan, now + 1800))[0]
        assert not refused.allowed and 0 < refused.retry_after <= 6.0  # one per 6 s, server time
        # the same skew on each replica's own clock: the lagging replica sees the other's
        # charges an hour in its future and would tell its clients to wait an hour
        behind.server_time = ahead.server_time = False
        own = (counter(RATE, "own", 10, 60.0),)
        results = [(s, (await s.apply(own, now + d))[0]) for _ in range(8)
                   for s, d in ((behind, -1800), (ahead, 1800))]
        assert sum(a.allowed for s, a in results if s is behind) == 1
        assert results[-2][1].retry_after > 3500
    finally:
        await behind.close()
        await ahead.close()


# --- exact arithmetic beyond 2^53 ------------------------------------------------------------

@pytest.mark.parametrize("limit,period", [(1_000_000_007, 31 * 86_400.0), (999_983, 7.3),
                                          (3, 1.0), (2**40 + 15, 86_400.0)])
async def test_rate_answers_equal_the_memory_stores_to_the_microsecond(
        redis_store: RedisStore, limit: int, period: float) -> None:
    """tat * limit is far beyond a Lua double's 2^53 here: the script keeps tat as whole
    microseconds and a remainder, and must agree with the integer reference exactly."""
    memory = MemoryCounterStore()
    rng = random.Random(limit)
    now = START + 0.123457
    for step in range(120):
        cost = rng.choice([1, limit // 7 or 1, limit // 3 or 1, limit, limit + 1, 17])
        c = counter(RATE, "big", limit, period, cost, TOKENS)
        plan = (c, c._replace(cost=1)) if step % 5 == 0 else (c,)
        got, want = await redis_store.apply(plan, now), await memory.apply(plan, now)
        # allowed and remaining exactly; the seconds to a thousandth of a microsecond (the
        # compiled memory store divides integers past 2^53 as doubles: a last-bit difference)
        assert [(a.allowed, a.remaining) for a in got] == \
            [(a.allowed, a.remaining) for a in want], (step, cost)
        for a, b in zip(got, want, strict=True):
            assert a.reset_after == pytest.approx(b.reset_after, rel=0, abs=1e-9), (step, cost)
            assert a.retry_after == pytest.approx(b.retry_after, rel=0, abs=1e-9), (step, cost)
        if step % 9 == 0:
            await redis_store.reconcile(c, cost, cost // 2, now)
            await memory.reconcile(c, cost, cost // 2, now)
        now += rng.choice([0.0, 0.000001, 0.1, period / 3, period / limit])


# --- key records across processes ----------------------------------------------------------

async def test_concurrent_updates_from_one_read_exactly_one_wins(redis_store: RedisStore) -> None:
    rec = new_key(b"pepper-0123456789abcdef0123456789", "acme", START)[1]
    await redis_store.create_key(rec)
    stores = [RedisStore(redis_store.url, **SLACK) for _ in range(8)]
    try:
        results = await asyncio.gather(
            *(s.update_key(rec.with_changes(labels={"by": str(i)}), 0)
              for i, s in enumerate(stores)), return_exceptions=True)
        winners = [r for r in results if not isinstance(r, BaseException)]
        assert len(winners) == 1 and winners[0].version == 1
        assert all(isinstance(r, KeyConflictError) for r in results if r not in winners)
        assert await redis_store.get_key(rec.key_id) == winners[0]
    finally:
        for s in stores:
            await s.close()


async def test_a_corrupt_record_is_a_store_error(redis_store: RedisStore) -> None:
    await redis_store.redis.set(PREFIX + "k:BadRecord001", "not json")
    with pytest.raises(StoreError) as info:
        await redis_store.get_key("BadRecord001")
    assert info.value.operation == "decode"


# --- failures ------------------------------------------------------------------------------

async def test_an_unreachable_server_is_a_store_error_within_milliseconds() -> None:
    store = RedisStore(f"redis://:hunter2@127.0.0.1:{free_port()}/0")  # nothing listens there
    try:
        for call in (lambda: store.apply((counter(RATE, "r", 5, 60.0),), START),
                     lambda: store.get_key("AnyKeyId0001"), lambda: store.list_keys(),
                     lambda: store.connect()):
            started = time.monotonic()
            with pytest.raises(StoreError) as info:
                await call()
            assert time.monotonic() - started < 1.0
            assert "hunter2" not in str(info.value)
    finally:
        await store.close()


async def test_a_stale_quota_is_a_store_error_and_charges_nothing(
        redis_store: RedisStore) -> None:
    live = counter(RATE, "live", 5, 60.0)
    stale = counter(QUOTA, "q", 5, 86_400.0, expires=START - 1)
    with pytest.raises(StoreError) as info:
        await redis_store.apply((live, stale), START)
    assert "window ended" in str(info.value)
    assert (await redis_store.apply((live,), START))[0].remaining == 4


async def test_a_slot_counter_moves_its_expiry_once_per_lease_period(
        redis_store: RedisStore) -> None:
    """The key lives a lease period past its last lease; a charge whose lease it already
    outlives keeps its TTL (the script keeps the key's expiry in it), and once its soonest
    lease may have ended, the leases whose release was lost are pruned."""
    slot, key = counter(CONCURRENCY, "cc", 5, 30.0), f"gk:{TAG}:cc"
    start_us = round(START * 1_000_000)

    async def stored() -> tuple[int, int, int, list[tuple[int, int]]]:
        raw = await redis_store.redis.get(key)
        assert isinstance(raw, bytes)
        return slots_state(raw)

    lost = (await redis_store.apply((slot,), START))[0].lease
    assert lost is not None
    assert 30_000 < await redis_store.redis.pttl(key) <= 60_000
    assert (await stored())[2] == start_us + 60_000_000
    for t in (1.0, 2.0, 29.0):
        assert (await redis_store.apply((slot,), START + t))[0].allowed
        assert (await stored())[2] == start_us + 60_000_000  # KEEPTTL
    assert await redis_store.redis.pttl(key) <= 60_000
    answers = await redis_store.apply((slot,), START + 31.0)  # its lease would outlive the key
    # held: the leases taken at +2 and +29 (the lost one and +1's have ended)
    assert answers[0].allowed and answers[0].remaining == 5 - 2 - 1
    last, soon, ends, leases = await stored()
    assert ends == start_us + 91_000_000 and 59_000 < await redis_store.redis.pttl(key) <= 60_000
    assert [expiry for _, expiry in leases] == [start_us + (t + 30) * 1_000_000
                                                for t in (2, 29, 31)]
    assert lost.id not in [lease_id for lease_id, _ in leases]  # pruned
    assert soon == start_us + 32_000_000 and last == leases[-1][0]
    assert await redis_store.release([lost], START + 31.0) == 0


async def test_a_rate_value_an_older_script_wrote_as_text_still_reads(
        redis_store: RedisStore) -> None:
    """Rate values were text ('tat_us tat_rem'); they are three doubles now. A text value left
    by an older gatekeeper (a rolling upgrade) is read as before, then written in the new form
    with its TTL moved."""
    rule = counter(RATE, "text", 10, 60.0)
    now_us = round(START * 1_000_000)
    # 4 units charged and 7/10 us: tat 24 s ahead, a remainder to show the exact parts survive
    await redis_store.redis.set(rule.key, f"{now_us + 24_000_000} 7", px=60_000)
    answer = (await redis_store.apply((rule,), START))[0]
    assert answer.allowed and answer.remaining == 10 - 5 - 1  # the remainder takes a unit
    raw = await redis_store.redis.get(rule.key)
    assert isinstance(raw, bytes) and len(raw) == RATE_VALUE.size
    assert rate_state(raw) == (now_us + 24_000_000 + 6_000_000, 7)


async def test_a_rate_key_keeps_its_ttl_until_its_tat_would_outlive_it(
        redis_store: RedisStore) -> None:
    """A rate key lives a second past its tat; its TTL is moved (PX) only when the tat would
    outlive it, then to two seconds past the tat (the value keeps that expiry), so most
    charges keep it (KEEPTTL)."""
    rule = counter(RATE, "ttl", 1000, 1.0)  # 1 ms of tat per unit
    start_us = round(START * 1_000_000)

    async def expiry() -> int:
        raw = await redis_store.redis.get(rule.key)
        assert isinstance(raw, bytes)
        return int(RATE_VALUE.unpack(raw)[2])

    for i in range(5):
        assert (await redis_store.apply((rule,), START + i * 0.1))[0].allowed
        assert await expiry() == start_us + 1000 + 1 + 2_000_000  # set by the first
    assert 1_900 <= await redis_store.redis.pttl(rule.key) <= 2_002
    assert (await redis_store.apply((rule,), START + 1.5))[0].allowed  # tat + 1 s outlives it
    assert await expiry() == start_us + 1_500_000 + 1000 + 1 + 2_000_000


async def test_a_sorted_set_an_older_script_kept_slots_in_is_replaced(
        redis_store: RedisStore) -> None:
    """Older scripts kept a counter's leases in a sorted set: read as a string it is absent
    (MGET), so the first charge counts from zero and its SET replaces it (the old leases are
    forgotten once, at the upgrade)."""
    slot = counter(CONCURRENCY, "old", 3, 30.0)
    now_us = round(START * 1_000_000)
    await redis_store.redis.zadd(slot.key, {"101": now_us + 20_000_000, "#": -101})
    first = (await redis_store.apply((slot,), START))[0]
    assert first.allowed and first.remaining == 3 - 1
    assert first.lease is not None and first.lease.id == now_us  # ids never below now
    assert await redis_store.redis.type(slot.key) == b"string"
    assert await redis_store.release([first.lease], START + 1.0) == 1


async def test_counter_values_not_packed_whole_are_a_clear_script_error(
        redis_store: RedisStore) -> None:
    """The scripts read each counter's 7 values as packed doubles (``SPEC``): a caller sending
    anything else gets an error naming the format, and nothing is charged."""
    live = counter(RATE, "live", 5, 60.0)
    keys, specs = apply_args((live,))
    await APPLY.load(redis_store.redis)
    for bad in (specs[:-1], b"r 5 60000000 1 12000000 0 0"):
        with pytest.raises(ResponseError, match="7 doubles"):
            await APPLY(redis_store.redis, keys, ["", bad])
    assert (await redis_store.apply((live,), START))[0].remaining == 4


async def test_a_restarted_server_is_used_again_without_help() -> None:
    """Down: every call is a StoreError within milliseconds. Back (empty, scripts forgotten):
    the next calls reconnect and reload the scripts by themselves."""
    plan = (counter(RATE, "r", 5, 60.0),)
    with redis_server() as port:
        store = RedisStore(f"redis://127.0.0.1:{port}/0")
        await store.connect()
        assert (await store.apply(plan, START))[0].allowed
    try:
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(StoreError):
                await store.apply(plan, START)
            assert time.monotonic() - started < 0.5
        with redis_server(port=port):
            answers = await store.apply(plan, START)
            assert answers[0].allowed and answers[0].remaining == 4  # counters start afresh
            assert await store.get_key("AnyKeyId0001") is None
    finally:
        await store.close()
