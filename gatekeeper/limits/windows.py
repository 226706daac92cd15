"""UTC calendar windows for quotas: which day or month an instant is in, and when it ends.

The plan names the window in a quota's storage key (``:dt:2026-11-30``, ``:mt:2026-11``) and
gives its end as the counter's expiry, so a backend only counts with an expiry and never does
calendar math (the Redis store's Lua then needs no calendar either). A month is the UTC
calendar month, whatever its length. One window pair is cached per UTC day: the hot path
pays a division and a comparison.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple

from gatekeeper.policy.limits import DAILY, DAY, MONTHLY


class Window(NamedTuple):
    label: str
    """``2026-11-30`` or ``2026-11``: what the storage key names."""
    start: float
    end: float
    """Unix seconds; the counter expires then."""


_cache: dict[int, tuple[Window, Window]] = {}


def windows(now: float) -> tuple[Window, Window]:
    """The UTC day and the UTC month that ``now`` (Unix seconds) is in."""
    day = int(now // DAY)
    found = _cache.get(day)
    if found is None:
        found = _compute(day)
        if len(_cache) > 64:
            _cache.clear()  # a replay walking through years of days stays bounded
        _cache[day] = found
    return found


def window(kind: str, now: float) -> Window:
    """``kind`` is ``day`` or ``month`` (``DAILY``, ``MONTHLY``)."""
    daily, monthly = windows(now)
    if kind == DAILY:
        return daily
    if kind == MONTHLY:
        return monthly
    raise ValueError(f"unknown quota window {kind!r}")


def _compute(day: int) -> tuple[Window, Window]:
    start = day * DAY
    date = datetime.fromtimestamp(start, UTC)
    first = date.replace(day=1)
    after = first.replace(year=first.year + 1, month=1) if first.month == 12 else \
        first.replace(month=first.month + 1)
    return (Window(date.strftime("%Y-%m-%d"), start, start + DAY),
            Window(first.strftime("%Y-%m"), first.timestamp(), after.timestamp()))
