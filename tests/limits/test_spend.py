"""Spend: prices per model in dollars per million tokens, counted in whole micro-dollars."""

from __future__ import annotations

import pytest

from gatekeeper.errors import PolicyError
from gatekeeper.limits.plan import SPEND, build_plan, settled_cost
from gatekeeper.limits.spend import NO_PRICES, Price, price_for, spend_of
from gatekeeper.policy.limits import dollars
from gatekeeper.policy.load import compile_policy

PRICES = compile_policy({"prices": {
    "gpt-4o": {"input": 2.5, "output": 10},
    "gpt-4o-mini*": {"input": 0.15, "output": 0.6},
    "default": {"input": 5, "output": 15},
}}).prices


def test_a_dollar_per_million_tokens_is_a_micro_dollar_per_token() -> None:
    assert spend_of(PRICES, "gpt-4o", 1_000_000, 0) == 2_500_000  # $2.50
    assert spend_of(PRICES, "gpt-4o", 1000, 1000) == 2500 + 10_000


def test_fractions_round_up_and_never_meet_a_float() -> None:
    # 100 tokens at $0.15/M is 15 micro-dollars exactly (100 * 0.15 is 15.000000000000002)
    assert spend_of(PRICES, "gpt-4o-mini", 100, 0) == 15
    assert spend_of(PRICES, "gpt-4o-mini", 1, 0) == 1  # 0.15 rounds up: never free
    assert spend_of(PRICES, "gpt-4o-mini", 0, 0) == 0


def test_exact_names_then_patterns_then_default() -> None:
    assert price_for(PRICES, "gpt-4o") == Price(2_500_000, 10_000_000)
    assert price_for(PRICES, "gpt-4o-mini-2024-07-18") == Price(150_000, 600_000)
    assert price_for(PRICES, "some-other-model") == Price(5_000_000, 15_000_000)
    assert spend_of(NO_PRICES, "gpt-4o", 1000, 1000) == 0
    assert spend_of(PRICES, "gpt-4o", -5, -5) == 0  # bad usage never refunds


def test_spend_limits_are_whole_micro_dollars() -> None:
    assert dollars(200) == 200_000_000 and dollars(12.5) == 12_500_000
    assert dollars("0.000001") == 1
    for bad in (0, -1, 10**400, float("nan"), float("inf"), "abc", True, "1e400", 1e-9):
        with pytest.raises(ValueError):
            dollars(bad)


def test_the_plan_reserves_the_spend_estimate_and_settles_the_real_spend() -> None:
    policy = compile_policy({"prices": {"default": {"input": 1, "output": 1}},
                             "tenants": {"acme": {"limits": {"monthly_spend": 10}}}})
    [counter] = build_plan("acme", "kK", None, policy.tenants["acme"].limits, 100,
                           now=1_764_547_199.0, spend=777)
    assert counter.unit == SPEND and counter.cost == 777 and counter.limit == 10_000_000
    assert settled_cost(counter, tokens=100, spend=555) == 555
    assert settled_cost(counter._replace(unit="tokens"), tokens=100, spend=555) == 100
    assert settled_cost(counter._replace(unit="requests", cost=1), tokens=9, spend=9) == 1


def errors_of(data: dict[str, object]) -> dict[str, str]:
    with pytest.raises(PolicyError) as info:
        compile_policy(data)
    return {e.field: e.problem for e in info.value.errors}


def test_bad_prices_are_named_by_field() -> None:
    errors = errors_of({"prices": {"gpt-4o": {"input": -1, "output": "x"},
                                   "m": {"input": 1}, "n": {"input": 1, "output": 1, "cached": 2},
                                   "o": 5}})
    assert set(errors) == {"prices.gpt-4o.input", "prices.gpt-4o.output", "prices.m.output",
                           "prices.n.cached", "prices.o"}
    assert "required" in errors["prices.m.output"]


def test_spend_limits_need_a_default_price() -> None:
    errors = errors_of({"prices": {"gpt-4o": {"input": 1, "output": 1}},
                        "tenants": {"acme": {"limits": {"monthly_spend": 200,
                                                        "per_tenant": {"daily_spend": 50}}}}})
    assert set(errors) == {"tenants.acme.limits.monthly_spend",
                           "tenants.acme.limits.per_tenant.daily_spend"}
    assert "default price" in errors["tenants.acme.limits.monthly_spend"]
    assert set(errors_of({"tenants": {"acme": {"limits": {"daily_spend": 0}}}})) == {
        "tenants.acme.limits.daily_spend"}
