"""The ``limits`` section of a tenant: rates, concurrency and daily quotas, per scope.

    tenants:
      acme:
        limits:
          requests: 60/minute        # each key (or JWT subject) of the tenant
          tokens: 90000/minute
          concurrency: 4
          daily_tokens: 2000000
          per_tenant: {requests: 600/minute}   # all of the tenant's keys together
          per_client: {requests: 20/second}    # each client address (IPv6 by /64)

The top level is per credential because a stolen key is the unit of damage; ``per_tenant``
caps a tenant whatever number of keys it mints; ``per_client`` caps one address (or /64)
across keys. A tenant without the section has no limits and pays nothing for them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from gatekeeper.policy.fields import Fields

MIN_PERIOD = 1.0
MAX_PERIOD = 31 * 86_400.0
MAX_COUNT = 10**12
"""Larger limits are a typo (and would make the integer GCRA state needlessly wide)."""
DEFAULT_LEASE = 600.0
"""Seconds a concurrency slot is held when its holder never releases it (a crashed process)."""

RATE = "rate"
CONCURRENCY = "concurrency"
QUOTA = "quota"
REQUESTS = "requests"
TOKENS = "tokens"
DAY = 86_400.0

Template = tuple[str, str, int, float, str, bool]
"""One counter of a scope, precomputed: (kind, storage key suffix, limit, period, unit,
charged the token estimate)."""

_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
          "h": 3600.0, "hour": 3600.0, "d": 86_400.0, "day": 86_400.0}
_RATE = re.compile(r"\s*(\d{1,13})\s*/\s*(\d{1,7})?\s*([a-z]+)\s*")


@dataclass(frozen=True, slots=True)
class Rate:
    limit: int
    period: float
    """Seconds, whole."""

    def __str__(self) -> str:
        return f"{self.limit}/{self.period:g}s"


@dataclass(frozen=True, slots=True)
class LimitSet:
    """The limits of one scope; ``None`` means unlimited."""

    requests: Rate | None = None
    tokens: Rate | None = None
    concurrency: int | None = None
    daily_requests: int | None = None
    daily_tokens: int | None = None

    @property
    def empty(self) -> bool:
        return self == _NONE

    def templates(self, lease: float) -> tuple[Template, ...]:
        """The counters this scope charges, in check order. A rate's limit and period are in
        its key (its GCRA state is in units of its rate, so a changed rate starts afresh);
        quotas and slots keep their key, so raising a quota does not forgive usage."""
        out: list[Template] = []
        if self.requests is not None:
            r = self.requests
            out.append((RATE, f":rq:{r.limit}/{r.period:g}", r.limit, r.period, REQUESTS, False))
        if self.tokens is not None:
            r = self.tokens
            out.append((RATE, f":tk:{r.limit}/{r.period:g}", r.limit, r.period, TOKENS, True))
        if self.daily_requests is not None:
            out.append((QUOTA, ":dq", self.daily_requests, DAY, REQUESTS, False))
        if self.daily_tokens is not None:
            out.append((QUOTA, ":dt", self.daily_tokens, DAY, TOKENS, True))
        if self.concurrency is not None:
            out.append((CONCURRENCY, ":cc", self.concurrency, lease, REQUESTS, False))
        return tuple(out)


_NONE = LimitSet()


@dataclass(frozen=True, slots=True)
class TenantLimits:
    per_key: LimitSet = _NONE
    per_tenant: LimitSet = _NONE
    per_client: LimitSet = _NONE
    lease: float = DEFAULT_LEASE
    """Concurrency slot lease (seconds)."""
    charges_tokens: bool = field(init=False, default=False)
    """Some scope limits tokens: the request needs a token estimate and a reconcile."""
    empty: bool = field(init=False, default=True)
    key_counters: tuple[Template, ...] = field(init=False, default=(), repr=False)
    tenant_counters: tuple[Template, ...] = field(init=False, default=(), repr=False)
    client_counters: tuple[Template, ...] = field(init=False, default=(), repr=False)

    def __post_init__(self) -> None:
        scopes = (self.per_key, self.per_tenant, self.per_client)
        object.__setattr__(self, "empty", all(s.empty for s in scopes))
        object.__setattr__(self, "key_counters", self.per_key.templates(self.lease))
        object.__setattr__(self, "tenant_counters", self.per_tenant.templates(self.lease))
        object.__setattr__(self, "client_counters", self.per_client.templates(self.lease))
        object.__setattr__(self, "charges_tokens", any(
            s.tokens is not None or s.daily_tokens is not None for s in scopes))


NO_LIMITS = TenantLimits()


def parse_rate(text: str) -> Rate:
    """``60/minute``, ``20/s``, ``1000/5m``, ``2/day``: a count per a period of 1 s to 31 days."""
    found = _RATE.fullmatch(text.lower())
    name = found.group(3) if found else ""
    if name not in _UNITS and len(name) > 3 and name.endswith("s"):
        name = name[:-1]  # plurals; never "ms" (milliseconds are not minutes)
    unit = _UNITS.get(name)
    if found is None or unit is None:
        raise ValueError("is not a rate like 60/minute, 20/second, 1000/5m")
    count, multiple = int(found.group(1)), int(found.group(2) or 1)
    period = multiple * unit
    if not 1 <= count <= MAX_COUNT:
        raise ValueError(f"must count between 1 and {MAX_COUNT}")
    if not MIN_PERIOD <= period <= MAX_PERIOD:
        raise ValueError("must have a period from 1 second to 31 days")
    return Rate(count, period)


def load_limits(fields: Fields) -> TenantLimits:
    """The tenant's ``limits`` mapping (``fields`` is already that section)."""
    per_key = _load_set(fields)
    per_tenant = _load_set(fields.section("per_tenant"), nested=True)
    per_client = _load_set(fields.section("per_client"), nested=True)
    lease = fields.number("concurrency_lease", DEFAULT_LEASE, MIN_PERIOD, MAX_PERIOD)
    fields.finish()
    return TenantLimits(per_key, per_tenant, per_client, lease)


def _load_set(fields: Fields, nested: bool = False) -> LimitSet:
    found = LimitSet(_rate(fields, "requests"), _rate(fields, "tokens"),
                     _count(fields, "concurrency"), _count(fields, "daily_requests"),
                     _count(fields, "daily_tokens"))
    if nested:
        fields.finish()
    return found


def _rate(fields: Fields, name: str) -> Rate | None:
    text = fields.get(name, str, None, 'a rate like "60/minute"')
    if text is None:
        return None
    try:
        return parse_rate(text)
    except ValueError as exc:
        fields.error(name, text, str(exc))
        return None


def _count(fields: Fields, name: str) -> int | None:
    value = fields.get(name, int, None, "a whole number")
    if value is None:
        return None
    if not 1 <= value <= MAX_COUNT:
        fields.error(name, value, f"must be between 1 and {MAX_COUNT}")
        return None
    return int(value)
