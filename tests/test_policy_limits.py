"""The ``limits`` section of a tenant: good values compile, bad ones are named by field."""

from __future__ import annotations

import math

import pytest

from gatekeeper.errors import PolicyError
from gatekeeper.policy.limits import NO_LIMITS, LimitSet, Rate, TenantLimits, parse_rate
from gatekeeper.policy.load import compile_policy


def limits_of(section: object) -> TenantLimits:
    return compile_policy({"tenants": {"acme": {"limits": section}}}).tenants["acme"].limits


def errors_of(section: object) -> dict[str, str]:
    with pytest.raises(PolicyError) as info:
        limits_of(section)
    return {e.field: e.problem for e in info.value.errors}


def test_the_full_section_compiles() -> None:
    limits = limits_of({"requests": "60/minute", "tokens": "90000/minute", "concurrency": 4,
                        "daily_tokens": 2_000_000, "daily_requests": 10_000,
                        "per_tenant": {"requests": "600/min"},
                        "per_client": {"requests": "20/second"}, "concurrency_lease": 120})
    assert limits.per_key == LimitSet(Rate(60, 60.0), Rate(90_000, 60.0), 4, 10_000,
                                      2_000_000)
    assert limits.per_tenant == LimitSet(requests=Rate(600, 60.0))
    assert limits.per_client == LimitSet(requests=Rate(20, 1.0))
    assert limits.lease == 120.0
    assert limits.charges_tokens and not limits.empty


def test_no_section_means_no_limits() -> None:
    tenant = compile_policy({"tenants": {"acme": {}}}).tenants["acme"]
    assert tenant.limits == NO_LIMITS and tenant.limits.empty
    assert not tenant.limits.charges_tokens


@pytest.mark.parametrize(("text", "rate"), [
    ("60/minute", Rate(60, 60.0)), ("60/minutes", Rate(60, 60.0)), ("20/s", Rate(20, 1.0)),
    ("1000 / 5m", Rate(1000, 300.0)), ("2/day", Rate(2, 86_400.0)),
    ("5/HOUR", Rate(5, 3600.0)), ("1/31d", Rate(1, 31 * 86_400.0)),
    ("7/10seconds", Rate(7, 10.0))])
def test_rate_spellings(text: str, rate: Rate) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", [
    "60", "60/", "/minute", "-1/minute", "0/minute", "1.5/minute", "60/fortnight",
    "60/ms", "60/0s", "60/32d", "nan/minute", "60 per minute", "10000000000000/s"])
def test_bad_rates_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rate(text)


def test_bad_values_are_named_by_field_all_at_once() -> None:
    errors = errors_of({"requests": "60/ms", "tokens": 90000, "concurrency": -1,
                        "daily_tokens": math.nan, "daily_requests": True,
                        "per_client": {"requests": "0/second", "concurrencyy": 2},
                        "per_tenant": "lots", "concurrency_lease": 0.5})
    assert set(errors) == {
        "tenants.acme.limits.requests", "tenants.acme.limits.tokens",
        "tenants.acme.limits.concurrency", "tenants.acme.limits.daily_tokens",
        "tenants.acme.limits.daily_requests", "tenants.acme.limits.per_client.requests",
        "tenants.acme.limits.per_client.concurrencyy", "tenants.acme.limits.per_tenant",
        "tenants.acme.limits.concurrency_lease"}
    assert "1 second to 31 days" in errors["tenants.acme.limits.requests"] or \
        "rate like" in errors["tenants.acme.limits.requests"]
    assert "rate like" in errors["tenants.acme.limits.tokens"]
    assert "between 1 and" in errors["tenants.acme.limits.concurrency"]
    assert "whole number" in errors["tenants.acme.limits.daily_tokens"]
    assert "known field" in errors["tenants.acme.limits.per_client.concurrencyy"]


def test_huge_and_float_counts_are_refused_without_overflow() -> None:
    errors = errors_of({"concurrency": 10**400, "daily_tokens": 4.0})
    assert set(errors) == {"tenants.acme.limits.concurrency", "tenants.acme.limits.daily_tokens"}


def test_a_limits_section_that_is_not_a_mapping_is_named() -> None:
    assert set(errors_of(["60/minute"])) == {"tenants.acme.limits"}


def test_monthly_quotas_and_spend_compile() -> None:
    limits = compile_policy({"prices": {"default": {"input": 1, "output": 2}},
                             "tenants": {"acme": {"limits": {
                                 "monthly_requests": 100, "monthly_tokens": 5000,
                                 "daily_spend": 2.5, "monthly_spend": 200,
                                 "per_tenant": {"monthly_spend": 1000}}}}}).tenants["acme"].limits
    assert limits.per_key == LimitSet(monthly_requests=100, monthly_tokens=5000,
                                      daily_spend=2_500_000, monthly_spend=200_000_000)
    assert limits.per_tenant == LimitSet(monthly_spend=1_000_000_000)
    assert limits.windowed and limits.charges_tokens and limits.charges_spend


def test_bad_monthly_and_spend_values_are_named() -> None:
    errors = errors_of({"monthly_tokens": 0, "monthly_requests": "many",
                        "monthly_spend": "lots", "daily_spend": -3,
                        "per_client": {"monthly_spend": 10**400}})
    assert set(errors) == {"tenants.acme.limits.monthly_tokens",
                           "tenants.acme.limits.monthly_requests",
                           "tenants.acme.limits.monthly_spend", "tenants.acme.limits.daily_spend",
                           "tenants.acme.limits.per_client.monthly_spend"}
    assert "dollars" in errors["tenants.acme.limits.monthly_spend"]
