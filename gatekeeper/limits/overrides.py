"""A key's own limits: set per key from the CLI, stored on its record, and only ever narrowing.

A key's override is a ``LimitSet`` (the fields of one scope of a tenant's ``limits``). The
effective per-key limits are ``narrow(tenant, key)``: each field is the tighter of the two,
and a key limit where the tenant has none narrows "unlimited". A key can therefore never get
more than its tenant allows, even if the policy is tightened after the key was given its
override (the CLI refuses a widening override when it is set; ``limits show`` marks a
clamped one). Two rates of different periods are combined without widening either: the
smaller burst at the slower sustained rate (tenant 60/minute, key 2/second: 2 per 2 s).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from gatekeeper.errors import ConfigError
from gatekeeper.policy.limits import MAX_COUNT, LimitSet, Rate, TenantLimits, dollars

FLAGS: dict[str, str] = {
    "rpm": "requests", "tpm": "tokens", "concurrency": "concurrency",
    "daily_requests": "daily_requests", "daily_tokens": "daily_tokens",
    "monthly_requests": "monthly_requests", "monthly_tokens": "monthly_tokens",
    "daily_spend": "daily_spend", "monthly_spend": "monthly_spend",
}
"""CLI option (``--rpm``, ``--daily-tokens``...) by argparse dest -> stored field."""
CLEAR = "none"


def flag_name(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def parse_flag(dest: str, text: str) -> object | None:
    """The stored value of one option (``None`` for ``none``: the override is cleared).
    Per-minute rates are stored as policy text (``60/minute``), spend as dollars."""
    value = text.strip().lower()
    if value == CLEAR:
        return None
    field = FLAGS[dest]
    if field.endswith("_spend"):
        try:
            dollars(value)
        except ValueError as exc:
            raise ConfigError(flag_name(dest), text, f"{exc}, or none") from None
        amount = float(value)
        return int(amount) if amount.is_integer() else amount
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_COUNT:
        raise ConfigError(flag_name(dest), text,
                          f"must be a whole number from 1 to {MAX_COUNT}, or none")
    return f"{int(value)}/minute" if field in ("requests", "tokens") else int(value)


def apply_flags(stored: dict[str, Any], given: dict[str, str | None]) -> dict[str, Any]:
    """The record's override after the options given (``dest -> text``, None when absent)."""
    out = dict(stored)
    for dest, text in given.items():
        if text is None:
            continue
        value = parse_flag(dest, text)
        if value is None:
            out.pop(FLAGS[dest], None)
        else:
            out[FLAGS[dest]] = value
    return out


def narrow(tenant: TenantLimits, key: LimitSet | None) -> TenantLimits:
    """The tenant's limits with its per-key scope narrowed by the key's own limits."""
    if key is None or key.empty:
        return tenant
    per_key = narrow_set(tenant.per_key, key)
    if per_key == tenant.per_key:
        return tenant
    return TenantLimits(per_key, tenant.per_tenant, tenant.per_client, tenant.lease,
                        tenant.slices)


def narrow_set(tenant: LimitSet, key: LimitSet) -> LimitSet:
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(LimitSet):
        mine, theirs = getattr(key, f.name), getattr(tenant, f.name)
        if mine is None or mine == theirs:
            continue
        changes[f.name] = mine if theirs is None else \
            _tighter_rate(theirs, mine) if isinstance(mine, Rate) else min(mine, theirs)
    return dataclasses.replace(tenant, **changes) if changes else tenant


def widenings(tenant: TenantLimits, key: LimitSet) -> list[tuple[str, object, object]]:
    """(field, key value, tenant value) for each key limit looser than its tenant's."""
    effective = narrow_set(tenant.per_key, key)
    return [(f.name, getattr(key, f.name), getattr(tenant.per_key, f.name))
            for f in dataclasses.fields(LimitSet)
            if getattr(key, f.name) is not None
            and getattr(effective, f.name) != getattr(key, f.name)]


def _tighter_rate(a: Rate, b: Rate) -> Rate:
    limit = min(a.limit, b.limit)
    slow = a if a.limit * b.period <= b.limit * a.period else b  # the lower sustained rate
    if slow.limit == limit:
        return slow  # slower and no larger burst: it is the tighter of the two
    # whole seconds rounded up: never faster than the slower rate
    return Rate(limit, float(math.ceil(limit * slow.period / slow.limit)))


def shown(field: str, value: object) -> str:
    """A limit as people read it: ``60/60s``, ``4``, ``$200`` (spend is kept in micro-dollars)."""
    if value is None:
        return "-"
    if field.endswith("_spend") and isinstance(value, int):
        return f"${value / 1_000_000:,.6f}".rstrip("0").rstrip(".")
    return str(value)


def flag_for(field: str) -> str:
    """The CLI option that sets a field (``requests`` -> ``--rpm``)."""
    return flag_name(next(dest for dest, name in FLAGS.items() if name == field))
