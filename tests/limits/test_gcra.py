"""GCRA arithmetic: exact integer steps, nothing charged on refusal."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from gatekeeper.limits.gcra import US, gcra, refund, to_us

NOW = to_us(1_700_000_000.0)


def test_a_fresh_counter_allows_the_whole_burst_and_no_more() -> None:
    tat = 0
    for i in range(7):
        answer = gcra(tat, NOW, 7, 60 * US, 7)
        assert answer.allowed and answer.remaining == 6 - i
        tat = answer.tat
    refused = gcra(tat, NOW, 7, 60 * US, 7)
    assert not refused.allowed and refused.tat == tat
    assert math.isclose(refused.retry_after, 60 / 7)


def test_thirds_do_not_drift_over_many_periods() -> None:
    tat, passed = 0, 0
    for step in range(3 * 1000):  # a request every 1/3 s (rounded up), for 1000 s
        now = NOW - (-step * US // 3)
        answer = gcra(tat, now, 3, US, 2)
        passed += answer.allowed
        tat = answer.tat
    assert passed == 3000
    assert not gcra(tat, NOW + 1000 * US, 3, US, 2, 2).allowed  # and no credit piled up


def test_to_us_rounds_float_noise_away() -> None:
    assert to_us(1_700_000_000.05) - to_us(1_700_000_000.0) == 50_000


@given(st.floats(-1e13, 1e13) | st.floats(0, 2e9) | st.integers(0, 4 * 10**15).map(
    lambda us: us / US + 0.0000005))  # exact halves of a microsecond among them
def test_to_us_is_round_half_to_even(now: float) -> None:
    assert to_us(now) == round(now * US)


def test_refund_never_leaves_credit_beyond_the_burst() -> None:
    charged = gcra(0, NOW, 10, US, 10, 4).tat
    assert refund(charged, NOW, 10, US, 100) == NOW * 10
    assert refund(0, NOW, 10, US, -3) == NOW * 10 + 3 * US  # an extra charge on a fresh one


def test_the_memory_stores_inlined_gcra_answers_exactly_as_gcra() -> None:
    """``MemoryCounterStore.apply_now`` inlines ``gcra`` (it runs on every limited request):
    a seeded random walk of costs and times gets the same answers from both."""
    import random

    from gatekeeper.limits.plan import RATE, REQUESTS, Counter
    from gatekeeper.store.memory_counters import MemoryCounterStore

    rng = random.Random(20261130)
    for limit, period in ((1, 1.0), (7, 60.0), (90_000, 60.0), (10**9, 86_400.0)):
        store, tat, now = MemoryCounterStore(), 0, 1_700_000_000.0
        for _ in range(300):
            now += rng.choice((0.0, 0.000001, 0.01, 0.5, period / 3))
            cost = rng.choice((0, 1, 2, limit, limit + 1, rng.randint(0, limit)))
            counter = Counter(RATE, "k", "{t}", limit, period, cost, REQUESTS)
            got = store.apply_now((counter,), now)[0]
            want = gcra(tat, to_us(now), limit, round(period * US), limit, cost)
            assert (got.allowed, got.remaining, got.reset_after, got.retry_after) == \
                (want.allowed, want.remaining, want.reset_after, want.retry_after)
            tat = want.tat


@given(st.integers(0, 10**12), st.integers(0, 10**12), st.integers(1, 2**40),
       st.integers(1, 10**11), st.integers(0, 2**41), st.integers(-5, 10**11))
def test_the_redis_answer_from_the_split_tat_is_gcras(now_us: int, ahead: int, limit: int,
                                                      period_us: int, cost: int,
                                                      rem: int) -> None:
    """``redis_counters.rate_answer`` counts from now in machine words; ``gcra`` from zero in
    big integers: the same answer, for a tat ahead of now, at now, or behind it (fresh)."""
    from gatekeeper.store.redis_counters import rate_answer

    tat_us, tat_rem = now_us + ahead - 5, rem % limit  # some behind now: read as fresh
    got = rate_answer(tat_us, tat_rem, now_us, limit, period_us, cost)
    want = gcra(tat_us * limit + tat_rem, now_us, limit, period_us, limit, cost)
    assert (got.allowed, got.remaining, got.reset_after, got.retry_after) == \
        (want.allowed, want.remaining, want.reset_after, want.retry_after)
