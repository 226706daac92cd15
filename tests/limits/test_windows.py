"""Quota windows: the UTC day and calendar month in the storage key, the window end as expiry."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gatekeeper.limits.plan import QUOTA, SPEND, TOKENS, build_plan
from gatekeeper.limits.windows import window, windows
from gatekeeper.policy.limits import DAILY, MONTHLY, LimitSet, Rate, TenantLimits


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


MONTHLY_TOKENS = TenantLimits(per_key=LimitSet(monthly_tokens=1000, daily_requests=10),
                              per_tenant=LimitSet(monthly_spend=5_000_000))


@pytest.mark.parametrize(("at", "day", "month", "month_end"), [
    ("2026-11-30T23:59:59.999", "2026-11-30", "2026-11", "2026-12-01"),
    ("2026-12-01T00:00:00", "2026-12-01", "2026-12", "2027-01-01"),
    ("2026-12-31T23:59:59", "2026-12-31", "2026-12", "2027-01-01"),  # the year turns
    ("2028-02-29T12:00:00", "2028-02-29", "2028-02", "2028-03-01"),  # leap day
    ("2027-02-28T12:00:00", "2027-02-28", "2027-02", "2027-03-01"),
    ("1970-01-01T00:00:00", "1970-01-01", "1970-01", "1970-02-01"),
])
def test_windows_are_utc_calendar_days_and_months(at: str, day: str, month: str,
                                                  month_end: str) -> None:
    daily, monthly = windows(ts(at))
    assert daily.label == day and monthly.label == month
    assert daily.start == ts(day + "T00:00:00") and daily.end == daily.start + 86_400
    assert monthly.start == ts(month + "-01T00:00:00")
    assert monthly.end == ts(month_end + "T00:00:00")
    assert window(DAILY, ts(at)) == daily and window(MONTHLY, ts(at)) == monthly


def test_an_unknown_window_is_refused() -> None:
    with pytest.raises(ValueError):
        window("week", 0.0)


def test_quota_keys_name_their_window_and_expire_at_its_end() -> None:
    now = ts("2026-11-30T23:59:59")
    plan = build_plan("acme", "kK", None, MONTHLY_TOKENS, 300, now=now, spend=1234)
    by_key = {c.key: c for c in plan}
    assert set(by_key) == {"gk:{t:acme}:kK:dq:2026-11-30", "gk:{t:acme}:kK:mt:2026-11",
                           "gk:{t:acme}:all:ms:2026-11"}
    monthly = by_key["gk:{t:acme}:kK:mt:2026-11"]
    assert monthly.kind == QUOTA and monthly.unit == TOKENS and monthly.cost == 300
    assert monthly.expires == ts("2026-12-01T00:00:00")
    assert monthly.period == 30 * 86_400  # November
    spend = by_key["gk:{t:acme}:all:ms:2026-11"]
    assert spend.unit == SPEND and spend.cost == 1234 and spend.limit == 5_000_000
    after = build_plan("acme", "kK", None, MONTHLY_TOKENS, 300, now=now + 1)
    assert {c.key for c in after} == {"gk:{t:acme}:kK:dq:2026-12-01",
                                      "gk:{t:acme}:kK:mt:2026-12", "gk:{t:acme}:all:ms:2026-12"}


def test_quotas_need_now_and_rates_do_not() -> None:
    with pytest.raises(ValueError, match="now="):
        build_plan("acme", "kK", None, MONTHLY_TOKENS)
    rates = TenantLimits(per_key=LimitSet(requests=Rate(5, 1.0)))
    assert not rates.windowed and MONTHLY_TOKENS.windowed
    assert len(build_plan("acme", "kK", None, rates)) == 1


def test_limits_say_what_they_charge() -> None:
    assert MONTHLY_TOKENS.charges_tokens and MONTHLY_TOKENS.charges_spend
    requests_only = TenantLimits(per_tenant=LimitSet(monthly_requests=5))
    assert not requests_only.charges_tokens and not requests_only.charges_spend
