"""``MemoryCounterStore.take``/``give`` (the compiled fast path) against ``apply_now``/
``settle_now`` (the reference the contract suite checks): random request sequences on two
stores, one through each path, give the same answers and leave the same entries."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gatekeeper.limits.answer import Report
from gatekeeper.limits.plan import CONCURRENCY, QUOTA, RATE, REQUESTS, SPEND, TOKENS, Counter
from gatekeeper.store.counters import Correction
from gatekeeper.store.memory_counters import MemoryCounterStore
from gatekeeper.store.memory_plan import compile_plan

START = 1_700_000_000.0
WINDOW_END = START + 3_600.0

PLAN = (
    Counter(RATE, "gk:{t:a}:k1:rq", "{t:a}", 5, 10.0, 1, REQUESTS),
    Counter(RATE, "gk:{t:a}:k1:tk", "{t:a}", 300, 60.0, 0, TOKENS),
    Counter(CONCURRENCY, "gk:{t:a}:k1:cc", "{t:a}", 2, 30.0, 1, REQUESTS),
    Counter(QUOTA, "gk:{t:a}:all:qt", "{t:a}", 2_000, 3_600.0, 0, TOKENS, WINDOW_END),
    Counter(QUOTA, "gk:{t:a}:all:qs", "{t:a}", 9_000, 3_600.0, 0, SPEND, WINDOW_END),
)
PRICED = tuple(i for i, c in enumerate(PLAN) if c.unit != REQUESTS)

step = st.tuples(
    st.floats(0.0, 20.0),  # seconds since the previous request
    st.integers(0, 400),  # tokens reserved
    st.integers(0, 3_000),  # spend reserved
    st.one_of(st.none(), st.tuples(st.integers(0, 400), st.integers(0, 3_000))),  # usage
    st.booleans(),  # settled at once (else left holding its slot)
)


def priced(tokens: int, spend: int) -> tuple[Counter, ...]:
    return tuple(c._replace(cost=tokens) if c.unit == TOKENS else
                 c._replace(cost=spend) if c.unit == SPEND else c for c in PLAN)


@settings(max_examples=150, deadline=None)
@given(st.lists(step, min_size=1, max_size=40))
def test_take_and_give_answer_and_charge_exactly_as_apply_and_settle(
        steps: list[tuple[float, int, int, tuple[int, int] | None, bool]]) -> None:
    reference, fast = MemoryCounterStore(), MemoryCounterStore()
    compiled = compile_plan(PLAN)
    assert compiled is not None
    report = Report(PLAN)
    costly = tuple(c for c in compiled if c.unit)
    now = START
    refused = 0
    for gap, tokens, spend, usage, settle in steps:
        now += gap
        plan = priced(tokens, spend)
        expected = reference.apply_now(plan, now)
        costs = (1, tokens, spend)
        taken = fast.take(compiled, costs, now)
        got: Any
        if taken is None:  # what the middleware does: the refusal answered in full
            refused += 1
            assert not all(a.allowed for a in expected)
            got = fast.apply_now(plan, now)
        else:
            got = fast.answers(compiled, taken)
            assert report.headers_of(compiled) == report.allowed(expected)[0]
        assert [tuple(a) for a in got] == [tuple(a) for a in expected]
        if not settle or not all(a.allowed for a in expected):
            continue
        leases = [a.lease for a in expected if a.lease is not None]
        actual = costs if usage is None else (1, *usage)
        corrections: list[Correction] = [] if usage is None else [
            (plan[i], plan[i].cost, usage[0] if plan[i].unit == TOKENS else usage[1])
            for i in PRICED]
        assert reference.settle_now(leases, corrections, now) == \
            fast.give(costly, leases, costs, actual, now)
        assert fast.snapshot() == reference.snapshot()
    assert fast.snapshot() == reference.snapshot()


def test_plans_take_cannot_run_are_left_to_apply() -> None:
    twice = (PLAN[0], PLAN[0]._replace(limit=9))
    assert compile_plan(twice) is None  # one key twice
    assert compile_plan((PLAN[0]._replace(cost=2),)) is None  # a request costing two
    assert compile_plan((PLAN[3]._replace(expires=0.0),)) is None  # a quota without its end
    assert compile_plan(PLAN) is not None
