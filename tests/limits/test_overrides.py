"""A key's own limits: stored as policy fields, compiled once, and only ever narrowing."""

from __future__ import annotations

import pytest

from gatekeeper.errors import ConfigError, PolicyError
from gatekeeper.keys import KeyRecord, new_key, principal_for
from gatekeeper.limits.overrides import (
    apply_flags,
    flag_for,
    narrow,
    parse_flag,
    shown,
    widenings,
)
from gatekeeper.policy.limits import LimitSet, Rate, TenantLimits, load_key_limits

TENANT = TenantLimits(per_key=LimitSet(requests=Rate(100, 60.0), daily_tokens=10_000,
                                       monthly_spend=500_000_000),
                      per_tenant=LimitSet(requests=Rate(1000, 60.0)), lease=30.0)
PEPPER = b"p" * 32


def test_a_key_narrows_each_field_and_adds_limits_the_tenant_lacks() -> None:
    key = LimitSet(requests=Rate(60, 60.0), concurrency=4, monthly_spend=12_500_000)
    effective = narrow(TENANT, key)
    assert effective.per_key == LimitSet(requests=Rate(60, 60.0), concurrency=4,
                                         daily_tokens=10_000, monthly_spend=12_500_000)
    assert effective.per_tenant == TENANT.per_tenant and effective.lease == 30.0
    assert [t[0] for t in effective.key_counters] == ["rate", "quota", "quota", "concurrency"]
    assert widenings(TENANT, key) == []


def test_a_looser_key_limit_is_clamped_and_reported() -> None:
    key = LimitSet(requests=Rate(600, 60.0), daily_tokens=5, monthly_spend=900_000_000)
    effective = narrow(TENANT, key)
    assert effective.per_key == LimitSet(requests=Rate(100, 60.0), daily_tokens=5,
                                         monthly_spend=500_000_000)
    assert [w[0] for w in widenings(TENANT, key)] == ["requests", "monthly_spend"]


def test_no_override_is_the_tenant_itself() -> None:
    assert narrow(TENANT, None) is TENANT
    assert narrow(TENANT, LimitSet()) is TENANT
    assert narrow(TENANT, LimitSet(requests=Rate(100, 60.0))) is TENANT


@pytest.mark.parametrize(("tenant", "key", "expect"), [
    (Rate(60, 60.0), Rate(2, 1.0), Rate(2, 2.0)),       # smaller burst, slower sustained rate
    (Rate(2, 1.0), Rate(60, 60.0), Rate(2, 2.0)),       # the same, whichever side
    (Rate(60, 60.0), Rate(10, 60.0), Rate(10, 60.0)),   # one dominates: it is kept
    (Rate(10, 1.0), Rate(100, 60.0), Rate(10, 6.0)),
    (Rate(7, 1.0), Rate(100, 3600.0), Rate(7, 252.0)),
])
def test_rates_of_different_periods_combine_without_widening(tenant: Rate, key: Rate,
                                                             expect: Rate) -> None:
    found = narrow(TenantLimits(per_key=LimitSet(requests=tenant)),
                   LimitSet(requests=key)).per_key.requests
    assert found == expect
    assert found is not None
    for rate in (tenant, key):  # never a larger burst, never a faster sustained rate
        assert found.limit <= rate.limit
        assert found.limit * rate.period <= rate.limit * found.period


def test_flags_become_stored_policy_fields() -> None:
    stored = apply_flags({}, {"rpm": "60", "tpm": "90000", "concurrency": "4",
                              "daily_requests": None, "monthly_spend": "12.5",
                              "daily_spend": "200"})
    assert stored == {"requests": "60/minute", "tokens": "90000/minute", "concurrency": 4,
                      "monthly_spend": 12.5, "daily_spend": 200}
    assert load_key_limits(stored) == LimitSet(
        requests=Rate(60, 60.0), tokens=Rate(90_000, 60.0), concurrency=4,
        daily_spend=200_000_000, monthly_spend=12_500_000)
    cleared = apply_flags(stored, {"rpm": "none", "tpm": " NONE ", "concurrency": None})
    assert cleared == {"concurrency": 4, "monthly_spend": 12.5, "daily_spend": 200}


@pytest.mark.parametrize(("dest", "text"), [
    ("rpm", "0"), ("rpm", "-5"), ("rpm", "1.5"), ("rpm", "sixty"), ("rpm", ""),
    ("concurrency", "10000000000000"), ("daily_tokens", "1e3"), ("monthly_spend", "0"),
    ("monthly_spend", "-1"), ("monthly_spend", "nan"), ("monthly_spend", "abc"),
    ("daily_spend", "1e400"), ("tpm", "٣"),
])
def test_bad_flag_values_name_the_flag(dest: str, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_flag(dest, text)
    assert info.value.field == "--" + dest.replace("_", "-")
    assert "none" in str(info.value)


def test_labels_for_people() -> None:
    assert flag_for("requests") == "--rpm" and flag_for("monthly_spend") == "--monthly-spend"
    assert shown("monthly_spend", 12_500_000) == "$12.5"
    assert shown("daily_spend", 1) == "$0.000001"
    assert shown("requests", Rate(60, 60.0)) == "60/60s" and shown("x", None) == "-"


def test_records_carry_limits_and_old_records_load() -> None:
    _, record = new_key(PEPPER, "acme", 1.0, limits={"requests": "60/minute"})
    again = KeyRecord.from_dict(record.to_dict())
    assert again == record and again.limits == {"requests": "60/minute"}
    old = record.to_dict()
    del old["limits"]  # written before key limits existed
    assert KeyRecord.from_dict(old).limits == {}
    assert principal_for(KeyRecord.from_dict(old)).limits is None
    assert principal_for(record).limits == LimitSet(requests=Rate(60, 60.0))


def test_a_damaged_stored_override_is_refused_not_ignored() -> None:
    _, record = new_key(PEPPER, "acme", 1.0, limits={"requests": "lots", "burst": 5})
    with pytest.raises(PolicyError) as info:
        principal_for(record)
    assert {e.field for e in info.value.errors} == {
        f"key {record.key_id} limits.requests", f"key {record.key_id} limits.burst"}
