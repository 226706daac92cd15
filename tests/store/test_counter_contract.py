"""The behaviour every counter store shares, run against each backend that has counters
(memory and Redis, the ``counters`` fixture's params). Time is injected: a
``ManualClock`` moves only when a test says so, and every call is given its ``now``."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gatekeeper.clock import ManualClock
from gatekeeper.errors import StoreError
from gatekeeper.limits.plan import (
    CONCURRENCY,
    QUOTA,
    RATE,
    REQUESTS,
    SPEND,
    TOKENS,
    Counter,
    Plan,
)
from gatekeeper.limits.windows import window
from gatekeeper.policy.limits import DAILY, MONTHLY
from gatekeeper.store.counters import CounterAnswer, CounterStore
from gatekeeper.store.memory_counters import MemoryCounterStore
from tests.store.conftest import empty_redis_store

pytestmark = pytest.mark.anyio

DAY = 86_400.0
MIDNIGHT = 1_700_006_400.0
"""2023-11-15T00:00:00Z: a UTC day boundary (a multiple of 86 400)."""
START = 1_700_000_000.0
MONTH_END = 1_796_083_200.0
"""2026-12-01T00:00:00Z: a UTC month boundary."""


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
async def counters(request: pytest.FixtureRequest) -> AsyncIterator[CounterStore]:
    store: CounterStore = MemoryCounterStore() if request.param == "memory" else \
        await empty_redis_store(request.getfixturevalue(
            "redis_port" if request.param == "redis" else "redis_cluster_url"))
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


def rate(limit: int, period: float, cost: int = 1, key: str = "r", unit: str = REQUESTS
         ) -> Counter:
    return Counter(RATE, f"gk:{{t:acme}}:{key}", "{t:acme}", limit, period, cost, unit)


def quota(limit: int, now: float = START, cost: int = 1, key: str = "q", kind: str = DAILY,
          unit: str = TOKENS) -> Counter:
    """A quota counter the way the plan builds it: its window in its key, expiring at the
    window's end (so a backend only counts with an expiry)."""
    found = window(kind, now)
    return Counter(QUOTA, f"gk:{{t:acme}}:{key}:{found.label}", "{t:acme}", limit,
                   found.end - found.start, cost, unit, found.end)


def slots(limit: int, lease: float = 60.0, key: str = "c") -> Counter:
    return Counter(CONCURRENCY, f"gk:{{t:acme}}:{key}", "{t:acme}", limit, lease, 1, REQUESTS)


async def one(store: CounterStore, counter: Counter, now: float) -> CounterAnswer:
    [answer] = await store.apply((counter,), now)
    return answer


async def passes(store: CounterStore, plan: Plan, now: float, tries: int) -> int:
    count = 0
    for _ in range(tries):
        answers = await store.apply(plan, now)
        count += all(a.allowed for a in answers)
    return count


# --- rates (GCRA) ----------------------------------------------------------------------------

async def test_exactly_the_limit_passes_in_a_burst_then_retry_after_is_exact(
        counters: CounterStore, clock: ManualClock) -> None:
    counter = rate(20, 1.0)
    for i in range(20):
        answer = await one(counters, counter, clock.now())
        assert answer.allowed and answer.remaining == 19 - i
    refused = await one(counters, counter, clock.now())
    assert not refused.allowed
    assert refused.remaining == 0
    assert refused.retry_after == pytest.approx(0.05, abs=1e-6)
    assert refused.reset_after == pytest.approx(1.0, abs=1e-6)
    clock.advance(0.049)
    assert not (await one(counters, counter, clock.now())).allowed
    clock.advance(0.001)  # exactly retry_after after the refusal
    assert (await one(counters, counter, clock.now())).allowed
    assert not (await one(counters, counter, clock.now())).allowed


async def test_a_full_period_later_the_whole_burst_is_back(counters: CounterStore,
                                                          clock: ManualClock) -> None:
    counter = rate(60, 60.0)
    assert await passes(counters, (counter,), clock.now(), 61) == 60
    clock.advance(30.0)
    assert await passes(counters, (counter,), clock.now(), 61) == 30
    clock.advance(60.0)
    assert await passes(counters, (counter,), clock.now(), 61) == 60


async def test_no_double_burst_at_a_window_edge(counters: CounterStore,
                                               clock: ManualClock) -> None:
    """A fixed window would let 60 through at :59.9 and 60 more at :00.1."""
    counter = rate(60, 60.0)
    clock.set(START + 59.9)
    assert await passes(counters, (counter,), clock.now(), 100) == 60
    clock.advance(0.2)
    assert await passes(counters, (counter,), clock.now(), 100) == 0
    clock.advance(0.8)
    assert await passes(counters, (counter,), clock.now(), 100) == 1


async def test_greedy_client_never_beats_burst_plus_rate(counters: CounterStore,
                                                        clock: ManualClock) -> None:
    """Whatever the window, at most burst + d * rate pass in any interval of length d."""
    counter = rate(10, 10.0)
    times: list[float] = []
    for step in range(400):
        now = START + step * 0.25
        times += [now] * await passes(counters, (counter,), now, 20)
    for i, first in enumerate(times):
        within = sum(1 for t in times[i:] if t < first + 5.0)
        assert within <= 10 + 5


async def test_token_costs_are_charged_whole(counters: CounterStore, clock: ManualClock) -> None:
    counter = rate(1000, 60.0, cost=400, unit=TOKENS)
    assert (await one(counters, counter, clock.now())).remaining == 600
    assert (await one(counters, counter, clock.now())).remaining == 200
    refused = await one(counters, counter, clock.now())
    assert not refused.allowed and refused.remaining == 200
    assert refused.retry_after == pytest.approx(12.0, abs=1e-6)  # 200 tokens at 1000/60 s
    small = await one(counters, counter._replace(cost=200), clock.now())
    assert small.allowed and small.remaining == 0


async def test_a_cost_above_the_limit_never_passes_and_says_so(counters: CounterStore,
                                                               clock: ManualClock) -> None:
    counter = rate(1000, 60.0, cost=1001, unit=TOKENS)
    refused = await one(counters, counter, clock.now())
    assert not refused.allowed and refused.retry_after == math.inf
    assert (await one(counters, counter._replace(cost=1000), clock.now())).allowed


# --- all or nothing ------------------------------------------------------------------------

async def test_a_refused_plan_charges_nothing(counters: CounterStore, clock: ManualClock) -> None:
    first, second = rate(5, 60.0, key="a"), rate(1, 60.0, key="b")
    held = slots(3)
    now = clock.now()
    assert (await one(counters, second, now)).allowed
    answers = await counters.apply((first, held, second), now)
    assert [a.allowed for a in answers] == [True, True, False]
    assert all(a.lease is None for a in answers)
    assert (await one(counters, first, now)).remaining == 4  # as if never charged
    assert (await one(counters, held, now)).remaining == 2  # no slot was kept


async def test_every_counter_of_a_passed_plan_is_charged(counters: CounterStore,
                                                        clock: ManualClock) -> None:
    key_rate, tenant_rate = rate(5, 60.0, key="k"), rate(100, 60.0, key="t")
    answers = await counters.apply((key_rate, tenant_rate), clock.now())
    assert [a.remaining for a in answers] == [4, 99]


# --- quotas --------------------------------------------------------------------------------

async def test_quota_rolls_over_at_the_utc_day_boundary(counters: CounterStore,
                                                        clock: ManualClock) -> None:
    clock.set(MIDNIGHT - 10.0)
    counter = quota(3, clock.now())
    assert await passes(counters, (counter,), clock.now(), 5) == 3
    refused = await one(counters, counter, clock.now())
    assert not refused.allowed and refused.retry_after == pytest.approx(10.0)
    clock.set(MIDNIGHT - 0.001)
    assert not (await one(counters, quota(3, clock.now()), clock.now())).allowed
    clock.set(MIDNIGHT)
    answer = await one(counters, quota(3, clock.now()), clock.now())
    assert answer.allowed and answer.remaining == 2
    assert answer.reset_after == pytest.approx(DAY)


async def test_monthly_quota_rolls_over_at_the_utc_month_boundary(
        counters: CounterStore, clock: ManualClock) -> None:
    clock.set(MONTH_END - 30 * DAY)  # 2026-11-01: the whole of November
    november = quota(100, clock.now(), cost=40, kind=MONTHLY, unit=SPEND)
    assert await passes(counters, (november,), clock.now(), 3) == 2
    clock.set(MONTH_END - 0.001)  # a day's rollover changes nothing in a monthly quota
    assert quota(100, clock.now(), cost=40, kind=MONTHLY).key == november.key
    refused = await one(counters, november, clock.now())
    assert not refused.allowed and refused.remaining == 20
    assert refused.retry_after == pytest.approx(0.001, abs=1e-6)
    clock.set(MONTH_END)
    december = quota(100, clock.now(), cost=40, kind=MONTHLY, unit=SPEND)
    assert december.key != november.key
    answer = await one(counters, december, clock.now())
    assert answer.allowed and answer.remaining == 60
    assert answer.reset_after == pytest.approx(31 * DAY)


async def test_a_quota_counter_is_forgotten_at_its_window_end(clock: ManualClock) -> None:
    """The backend needs no calendar: it counts until the expiry it is given (memory only:
    it reads the store's size)."""
    store = MemoryCounterStore()
    clock.set(MIDNIGHT - 2.0)
    counter = quota(2, clock.now())
    assert await passes(store, (counter,), clock.now(), 3) == 2
    assert store.peek((counter,), clock.now())[0].remaining == 0
    clock.set(MIDNIGHT)
    for i in range(8):  # a sweep runs every 8th write
        await store.apply((rate(5, 1.0, key=f"r{i}"),), clock.now())
    assert len(store) == 8  # the finished day's quota is gone


async def test_a_plan_kept_past_its_quota_window_fails_loudly(counters: CounterStore,
                                                               clock: ManualClock) -> None:
    """Applying yesterday's quota key would count into an expired counter: never a silent
    pass, a StoreError (the configured fail rule then applies)."""
    clock.set(MIDNIGHT - 1.0)
    stale = quota(2, clock.now())
    clock.set(MIDNIGHT)
    with pytest.raises(StoreError):
        await counters.apply((stale,), clock.now())


async def test_a_quota_cost_above_the_quota_never_passes(counters: CounterStore,
                                                         clock: ManualClock) -> None:
    refused = await one(counters, quota(100, clock.now(), cost=101), clock.now())
    assert not refused.allowed and refused.retry_after == math.inf


# --- concurrency ---------------------------------------------------------------------------

async def test_slots_are_released_exactly_once(counters: CounterStore, clock: ManualClock) -> None:
    counter, now = slots(2), clock.now()
    a, b = await one(counters, counter, now), await one(counters, counter, now)
    assert a.allowed and b.allowed and a.lease is not None and b.lease is not None
    assert a.lease != b.lease
    assert not (await one(counters, counter, now)).allowed
    assert await counters.release([a.lease], now) == 1
    assert await counters.release([a.lease], now) == 0  # twice frees nothing more
    c = await one(counters, counter, now)
    assert c.allowed and c.remaining == 0
    assert not (await one(counters, counter, now)).allowed


async def test_a_lease_expires_when_its_holder_never_releases(counters: CounterStore,
                                                             clock: ManualClock) -> None:
    counter = slots(1, lease=30.0)
    crashed = await one(counters, counter, clock.now())
    assert crashed.lease is not None
    clock.advance(29.999)
    refused = await one(counters, counter, clock.now())
    assert not refused.allowed and 0 < refused.retry_after <= 1.0
    assert refused.reset_after == pytest.approx(0.001, abs=1e-6)  # the held lease's expiry
    clock.advance(0.001)
    fresh = await one(counters, counter, clock.now())
    assert fresh.allowed and fresh.lease is not None
    # the late release of the expired lease must not free the new holder's slot
    assert await counters.release([crashed.lease], clock.now()) == 0
    assert not (await one(counters, counter, clock.now())).allowed


# --- reconcile (alone, or as part of a settle) ------------------------------------------------

Correct = Callable[[CounterStore, Counter, int, int, float], Awaitable[object]]


async def settle_one(store: CounterStore, counter: Counter, reserved: int, actual: int,
                     now: float) -> int:
    return await store.settle((), [(counter, reserved, actual)], now)


@pytest.fixture(params=["reconcile", "settle"])
def correct(request: pytest.FixtureRequest) -> Correct:
    """Each correction test runs through ``reconcile`` and through ``settle``: they agree."""
    if request.param == "settle":
        return settle_one
    return lambda store, counter, reserved, actual, now: store.reconcile(
        counter, reserved, actual, now)


async def test_reconcile_down_hands_tokens_back(counters: CounterStore, clock: ManualClock,
                                                correct: Correct) -> None:
    counter, now = rate(100, 60.0, cost=50, unit=TOKENS), clock.now()
    await one(counters, counter, now)
    await correct(counters, counter, 50, 20, now)
    assert (await one(counters, counter._replace(cost=80), now)).remaining == 0


async def test_reconcile_up_charges_the_real_usage(
        counters: CounterStore, clock: ManualClock, correct: Correct) -> None:
    counter, now = rate(100, 60.0, cost=10, unit=TOKENS), clock.now()
    await one(counters, counter, now)
    await correct(counters, counter, 10, 90, now)
    assert not (await one(counters, counter._replace(cost=20), now)).allowed
    assert (await one(counters, counter, now)).remaining == 0


async def test_reconcile_never_goes_below_zero(counters: CounterStore, clock: ManualClock,
                                               correct: Correct) -> None:
    counter, now = rate(100, 60.0, cost=10, unit=TOKENS), clock.now()
    await one(counters, counter, now)
    await correct(counters, counter, 10, 0, now)
    await correct(counters, counter, 10, 0, now)  # a second refund finds nothing to refund
    assert not (await one(counters, counter._replace(cost=101), now)).allowed
    assert (await one(counters, counter._replace(cost=100), now)).allowed


async def test_reconcile_on_a_quota(counters: CounterStore, clock: ManualClock,
                                    correct: Correct) -> None:
    clock.set(MIDNIGHT + 5.0)
    counter = quota(100, clock.now(), cost=40)
    await one(counters, counter, clock.now())
    await correct(counters, counter, 40, 10, clock.now())
    assert (await one(counters, counter._replace(cost=90), clock.now())).remaining == 0
    await correct(counters, counter, 90, 0, clock.now())
    await correct(counters, counter, 100, 0, clock.now())  # never below zero
    assert not (await one(counters, counter._replace(cost=101), clock.now())).allowed
    assert (await one(counters, counter._replace(cost=100), clock.now())).allowed


async def test_reconcile_of_spend_after_the_response(
        counters: CounterStore, clock: ManualClock, correct: Correct) -> None:
    """Spend is reserved as an estimate and settled with the real spend, like tokens."""
    clock.set(MONTH_END - DAY)
    counter = quota(1_000_000, clock.now(), cost=300_000, kind=MONTHLY, unit=SPEND)
    assert (await one(counters, counter, clock.now())).remaining == 700_000
    await correct(counters, counter, 300_000, 450_000, clock.now())
    assert (await one(counters, counter._replace(cost=550_000), clock.now())).remaining == 0


async def test_a_reconcile_after_the_window_ended_does_not_reopen_it(
        counters: CounterStore, clock: ManualClock, correct: Correct) -> None:
    """A response that ends after midnight settles nothing into the finished day, and
    charges nothing to the new day's counter (a different key)."""
    clock.set(MIDNIGHT - 1.0)
    counter = quota(100, clock.now(), cost=10)
    await one(counters, counter, clock.now())
    clock.set(MIDNIGHT + 1.0)
    await correct(counters, counter, 10, 90, clock.now())
    await correct(counters, counter, 10, 0, clock.now())
    fresh = await one(counters, quota(100, clock.now(), cost=100), clock.now())
    assert fresh.allowed and fresh.remaining == 0


async def test_a_key_named_twice_in_one_plan_sees_its_own_first_charge(
        counters: CounterStore, clock: ManualClock) -> None:
    twice = rate(3, 3600.0)._replace(cost=2)
    refused = await counters.apply((twice, twice), clock.now())
    assert [a.allowed for a in refused] == [True, False]  # 2 + 2 > 3
    assert (await one(counters, rate(3, 3600.0), clock.now())).remaining == 2  # nothing kept
    passed = await counters.apply((twice._replace(cost=1), twice._replace(cost=1)), clock.now())
    assert all(a.allowed for a in passed)
    assert (await one(counters, rate(3, 3600.0), clock.now())).remaining == 0


# --- settle: the end of one response in one call -----------------------------------------------

async def test_settle_gives_slots_back_and_corrects_every_reservation_in_one_call(
        counters: CounterStore, clock: ManualClock) -> None:
    clock.set(MIDNIGHT + 5.0)
    now = clock.now()
    requests, tokens = rate(10, 60.0), rate(100, 60.0, cost=50, key="t", unit=TOKENS)
    daily, slot = quota(1000, now, cost=50), slots(1)
    answers = await counters.apply((requests, tokens, daily, slot), now)
    assert all(a.allowed for a in answers)
    lease = answers[3].lease
    assert lease is not None
    corrections = [(requests, 1, 1), (tokens, 50, 20), (daily, 50, 400)]
    assert await counters.settle([lease], corrections, now) == 1
    assert (await one(counters, slot, now)).allowed  # the slot is free again
    assert (await one(counters, tokens._replace(cost=80), now)).remaining == 0  # 20 used
    assert (await one(counters, daily._replace(cost=600), now)).remaining == 0  # 400 used
    assert (await one(counters, requests, now)).remaining == 8  # (requests, 1, 1): unchanged


async def test_settle_gives_a_slot_back_exactly_once(counters: CounterStore,
                                                    clock: ManualClock) -> None:
    counter, now = slots(2), clock.now()
    a, b = await one(counters, counter, now), await one(counters, counter, now)
    assert a.lease is not None and b.lease is not None
    assert await counters.settle([a.lease], (), now) == 1
    assert await counters.settle([a.lease, b.lease], (), now) == 1  # a: already given back
    assert await counters.settle([a.lease, b.lease], (), now) == 0
    assert (await one(counters, counter, now)).remaining == 1


async def test_settle_with_nothing_to_correct_changes_nothing(counters: CounterStore,
                                                              clock: ManualClock) -> None:
    counter, now = rate(100, 60.0, cost=30, unit=TOKENS), clock.now()
    await one(counters, counter, now)
    assert await counters.settle((), (), now) == 0
    assert await counters.settle((), [(counter, 30, 30)], now) == 0  # the estimate was right
    assert (await one(counters, counter._replace(cost=70), now)).remaining == 0


async def test_settle_ignores_an_expired_lease_but_still_corrects(
        counters: CounterStore, clock: ManualClock) -> None:
    slot, tokens = slots(1, lease=30.0), rate(100, 3600.0, cost=50, key="t", unit=TOKENS)
    crashed = (await counters.apply((slot, tokens), clock.now()))[0].lease
    assert crashed is not None
    clock.advance(30.0)
    fresh = await one(counters, slot, clock.now())
    assert fresh.allowed and fresh.lease is not None
    # the expired lease frees nothing (the new holder keeps its slot); the tokens are refunded
    assert await counters.settle([crashed], [(tokens, 50, 0)], clock.now()) == 0
    assert not (await one(counters, slot, clock.now())).allowed
    assert (await one(counters, tokens._replace(cost=100), clock.now())).allowed


# --- exactness under concurrency ---------------------------------------------------------------

@pytest.mark.parametrize("kind", ["rate", "quota", "concurrency"])
async def test_200_concurrent_applies_against_50_allow_exactly_50(
        counters: CounterStore, clock: ManualClock, kind: str) -> None:
    # hour-long periods: Redis counts on its own clock, and a loaded machine may take seconds
    counter = {"rate": rate(50, 3600.0), "quota": quota(50, clock.now()),
               "concurrency": slots(50)}[kind]
    tenant = rate(1000, 3600.0, key="tenant")
    results = await asyncio.gather(*(counters.apply((tenant, counter), clock.now())
                                     for _ in range(200)))
    assert sum(all(a.allowed for a in answers) for answers in results) == 50
    assert (await one(counters, tenant, clock.now())).remaining == 1000 - 51


# --- what the base adds: error wrapping -----------------------------------------------------

class _Broken(MemoryCounterStore):
    def apply_now(self, plan: Plan, now: float) -> list[CounterAnswer]:
        raise ConnectionError("backend down")


async def test_backend_errors_are_wrapped_once_in_a_store_error(clock: ManualClock) -> None:
    with pytest.raises(StoreError) as info:
        await _Broken().apply((rate(1, 1.0),), clock.now())
    assert info.value.operation == "apply"
    assert "ConnectionError: backend down" in str(info.value)
    assert isinstance(info.value.__cause__, ConnectionError)


# --- memory only: peek (for the server to show, later) ------------------------------------------

async def test_peek_reads_without_charging(clock: ManualClock) -> None:
    store = MemoryCounterStore()
    now = clock.now()
    plan = (rate(10, 10.0), quota(5, now), slots(2))
    fresh = store.peek(plan, now)
    assert [a.remaining for a in fresh] == [10, 5, 2] and all(a.allowed for a in fresh)
    assert fresh[0].reset_after == 0.0
    await store.apply(plan, now)
    await store.apply(plan, now)
    seen = store.peek(plan, now)
    assert [a.remaining for a in seen] == [8, 3, 0]
    assert seen[0].reset_after == pytest.approx(2.0) and seen[0].allowed
    assert seen[1].reset_after == pytest.approx(window(DAILY, now).end - now)
    assert not seen[2].allowed  # both slots are held
    assert [a.remaining for a in store.peek(plan, now)] == [8, 3, 0]  # peeking charges nothing
    clock.advance(DAY)
    later = store.peek(plan, clock.now())
    assert [a.remaining for a in later] == [10, 5, 2]  # all expired: the day's quota too
    assert [a.remaining for a in store.peek((quota(5, clock.now()),), clock.now())] == [5]


# --- memory only: bounded ----------------------------------------------------------------------

async def test_memory_counters_are_bounded_and_drop_expired_ones(clock: ManualClock) -> None:
    store = MemoryCounterStore(max_counters=20)
    for i in range(100):
        await store.apply((rate(5, 1.0, key=f"k{i}"),), clock.now())
    assert len(store) == 20 and store.evicted_live == 80
    clock.advance(5.0)  # every counter above is back to full: expired
    for i in range(16):  # two sweeps of up to 16 (every 8th write)
        await store.apply((rate(5, 1.0, key=f"new{i}"),), clock.now())
    assert len(store) == 16  # the expired ones were swept, none live was evicted
    assert store.evicted_live == 80
