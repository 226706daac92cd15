"""The ``limits`` section of a tenant: rates, concurrency, daily and monthly quotas, per scope.

    tenants:
      acme:
        limits:
          requests: 60/minute        # each key (or JWT subject) of the tenant
          tokens: 90000/minute
          concurrency: 4
          daily_tokens: 2000000
          monthly_spend: 200                 # dollars, priced by the top-level `prices:`
          per_tenant: {requests: 600/minute}   # all of the tenant's keys together
          per_client: {requests: 20/second}    # each client address (IPv6 by /64)
          lease: {requests: 20, tokens: 5000}  # lease mode (Redis): slices per replica

The top level is per credential because a stolen key is the unit of damage; ``per_tenant``
caps a tenant whatever number of keys it mints; ``per_client`` caps one address (or /64)
across keys. A tenant without the section has no limits and pays nothing for them.

Quotas are UTC calendar windows: ``daily_*`` the UTC day, ``monthly_*`` the UTC calendar
month. Spend (``daily_spend``, ``monthly_spend``) is given in dollars and counted in whole
micro-dollars (``limits/spend.py``), so every counter is an integer.

``lease`` (in any scope) puts the named limits of that scope in lease mode: on a shared
(Redis) store each replica takes a slice of the budget and decides locally until it is spent
(``store/leased.py``). Strict is the default; the memory store ignores it. A slice is counted
in the limit's unit (requests, tokens, dollars for spend); ``concurrency: N`` there means N
slots counted in each replica's memory instead of the shared count.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gatekeeper.errors import ConfigError, PolicyError
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
SPEND = "spend"
"""The unit of spend counters: micro-dollars (1e-6 USD)."""
MICRO = 1_000_000
"""Micro-dollars per dollar."""
DAY = 86_400.0
DAILY = "day"
MONTHLY = "month"
MAX_SPEND = 10**9
"""Dollars: a larger spend limit is a typo."""

Template = tuple[str, str, int, float, str, str, int, float]
"""One counter of a scope, precomputed: (kind, storage key suffix, limit, period, unit,
calendar window, lease slice (0: strict), slice ttl). The unit says what it is charged
(requests 1, tokens the token estimate, spend the spend estimate); a quota's window (``day``
or ``month``, else "") is named in its key by the plan, which knows the time."""

DEFAULT_SLICE_TTL = 2.0
"""Seconds a lease-mode slice lives after its last top-up: an idle replica hands its unused
units back then."""
MIN_SLICE_TTL = 0.1
MAX_SLICE_TTL = 60.0
LEASABLE = ("requests", "tokens", "concurrency", "daily_requests", "daily_tokens",
            "daily_spend", "monthly_requests", "monthly_tokens", "monthly_spend")
"""The fields a scope's ``lease`` may name: every limit (a quota's slice in its unit)."""

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
class Slices:
    """Lease mode for one scope: the slice each replica takes per limit field (micro-dollars
    for spend); a field not named stays strict."""

    sizes: tuple[tuple[str, int], ...] = ()
    ttl: float = DEFAULT_SLICE_TTL

    def of(self, name: str, limit: int) -> int:
        """The slice of ``name`` (0: strict), never above its limit (a key's own narrower limit
        narrows its slice too)."""
        for field_name, size in self.sizes:
            if field_name == name:
                return min(size, limit)
        return 0


NO_SLICES = Slices()


@dataclass(frozen=True, slots=True)
class LimitSet:
    """The limits of one scope; ``None`` means unlimited."""

    requests: Rate | None = None
    tokens: Rate | None = None
    concurrency: int | None = None
    daily_requests: int | None = None
    daily_tokens: int | None = None
    monthly_requests: int | None = None
    monthly_tokens: int | None = None
    daily_spend: int | None = None
    """Micro-dollars, like every spend figure."""
    monthly_spend: int | None = None

    @property
    def empty(self) -> bool:
        return self == _NONE

    @property
    def quotas(self) -> tuple[tuple[str, str, str, int], ...]:
        """(field, unit, window, limit) of each quota set, in check order."""
        found = ((name, unit, window, getattr(self, name)) for name, unit, window in QUOTAS)
        return tuple(q for q in found if q[3] is not None)

    def templates(self, lease: float, slices: Slices = NO_SLICES) -> tuple[Template, ...]:
        """The counters this scope charges, in check order. A rate's limit and period are in
        its key (its GCRA state is in units of its rate, so a changed rate starts afresh);
        quotas and slots keep their key, so raising a quota does not forgive usage. A slice
        is not in the key: strict and lease mode share one budget."""
        out: list[Template] = []
        ttl = slices.ttl
        if self.requests is not None:
            r = self.requests
            out.append((RATE, f":rq:{r.limit}/{r.period:g}", r.limit, r.period, REQUESTS, "",
                        slices.of("requests", r.limit), ttl))
        if self.tokens is not None:
            r = self.tokens
            out.append((RATE, f":tk:{r.limit}/{r.period:g}", r.limit, r.period, TOKENS, "",
                        slices.of("tokens", r.limit), ttl))
        for name, unit, window, limit in self.quotas:
            out.append((QUOTA, _QUOTA_SUFFIX[name], limit, DAY, unit, window,
                        slices.of(name, limit), ttl))
        if self.concurrency is not None:
            out.append((CONCURRENCY, ":cc", self.concurrency, lease, REQUESTS, "",
                        slices.of("concurrency", self.concurrency), ttl))
        return tuple(out)


QUOTAS = (("daily_requests", REQUESTS, DAILY), ("daily_tokens", TOKENS, DAILY),
          ("daily_spend", SPEND, DAILY), ("monthly_requests", REQUESTS, MONTHLY),
          ("monthly_tokens", TOKENS, MONTHLY), ("monthly_spend", SPEND, MONTHLY))
"""Every quota field: (name, unit, calendar window)."""
_QUOTA_SUFFIX = {"daily_requests": ":dq", "daily_tokens": ":dt", "daily_spend": ":ds",
                 "monthly_requests": ":mq", "monthly_tokens": ":mt", "monthly_spend": ":ms"}
_NONE = LimitSet()


@dataclass(frozen=True, slots=True)
class TenantLimits:
    per_key: LimitSet = _NONE
    per_tenant: LimitSet = _NONE
    per_client: LimitSet = _NONE
    lease: float = DEFAULT_LEASE
    """Concurrency slot lease (seconds)."""
    slices: tuple[Slices, Slices, Slices] = (NO_SLICES, NO_SLICES, NO_SLICES)
    """Lease mode per scope (key, tenant, client): ``Slices``."""
    charges_tokens: bool = field(init=False, default=False)
    """Some scope limits tokens: the request needs a token estimate and a reconcile."""
    charges_spend: bool = field(init=False, default=False)
    """Some scope limits spend: the request needs a spend estimate and a reconcile."""
    windowed: bool = field(init=False, default=False)
    """Some scope has a quota: its storage keys name the UTC day or month, so a plan is only
    good until the window ends (``build_plan`` needs ``now``)."""
    empty: bool = field(init=False, default=True)
    key_counters: tuple[Template, ...] = field(init=False, default=(), repr=False)
    tenant_counters: tuple[Template, ...] = field(init=False, default=(), repr=False)
    client_counters: tuple[Template, ...] = field(init=False, default=(), repr=False)

    def __post_init__(self) -> None:
        scopes = (self.per_key, self.per_tenant, self.per_client)
        object.__setattr__(self, "empty", all(s.empty for s in scopes))
        key, tenant, client = self.slices
        object.__setattr__(self, "key_counters", self.per_key.templates(self.lease, key))
        object.__setattr__(self, "tenant_counters",
                           self.per_tenant.templates(self.lease, tenant))
        object.__setattr__(self, "client_counters",
                           self.per_client.templates(self.lease, client))
        units = {t[4] for s in scopes for t in s.templates(self.lease)}
        object.__setattr__(self, "charges_tokens", TOKENS in units)
        object.__setattr__(self, "charges_spend", SPEND in units)
        object.__setattr__(self, "windowed", any(s.quotas for s in scopes))


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
    key_slices = _load_slices(fields, per_key)
    tenant_fields, client_fields = fields.section("per_tenant"), fields.section("per_client")
    per_tenant = _load_set(tenant_fields)
    tenant_slices = _load_slices(tenant_fields, per_tenant)
    tenant_fields.finish()
    per_client = _load_set(client_fields)
    client_slices = _load_slices(client_fields, per_client)
    client_fields.finish()
    lease = fields.number("concurrency_lease", DEFAULT_LEASE, MIN_PERIOD, MAX_PERIOD)
    fields.finish()
    return TenantLimits(per_key, per_tenant, per_client, lease,
                        (key_slices, tenant_slices, client_slices))


def load_key_limits(data: Mapping[str, Any], source: str = "limits") -> LimitSet:
    """A key's own limits as stored on its record (same fields as one scope of the policy
    section, ``per_tenant`` and ``per_client`` excluded); PolicyError naming each bad field."""
    errors: list[ConfigError] = []
    found = _load_set(Fields(data, source, errors), nested=True)
    if errors:
        raise PolicyError(errors, source)
    return found


def _load_set(fields: Fields, nested: bool = False) -> LimitSet:
    found = LimitSet(_rate(fields, "requests"), _rate(fields, "tokens"),
                     _count(fields, "concurrency"), _count(fields, "daily_requests"),
                     _count(fields, "daily_tokens"), _count(fields, "monthly_requests"),
                     _count(fields, "monthly_tokens"), _spend(fields, "daily_spend"),
                     _spend(fields, "monthly_spend"))
    if nested:
        fields.finish()
    return found


def _load_slices(scope: Fields, limits: LimitSet) -> Slices:
    """A scope's ``lease``: ``{requests: 20, tokens: 5000, ttl: 2}``; each field names a
    limit set in the same scope, with a slice from 1 to that limit."""
    if not scope.has("lease"):
        return NO_SLICES
    fields = scope.section("lease")
    ttl = fields.number("ttl", DEFAULT_SLICE_TTL, MIN_SLICE_TTL, MAX_SLICE_TTL)
    sizes: list[tuple[str, int]] = []
    for name, value in fields.items():
        if name == "ttl":
            continue
        if name not in LEASABLE:
            fields.error(name, value, f"is not a limit; lease mode takes {', '.join(LEASABLE)}")
            continue
        limit = getattr(limits, name)
        if limit is None:
            fields.error(name, value, f"has no {name} limit to lease in this scope")
            continue
        top = limit.limit if isinstance(limit, Rate) else limit
        if name.endswith("_spend"):
            try:
                size = dollars(value)
            except ValueError as exc:
                fields.error(name, value, str(exc))
                continue
        elif isinstance(value, bool) or not isinstance(value, int):
            fields.error(name, value, "must be a whole number (the slice each replica takes)")
            continue
        else:
            size = value
        if not 1 <= size <= top:
            fields.error(name, value, f"must be from 1 to the limit ({top})")
            continue
        sizes.append((name, size))
    fields.finish()
    return Slices(tuple(sizes), ttl)


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


def _spend(fields: Fields, name: str) -> int | None:
    value = fields.get(name, (int, float), None, "a number of dollars")
    if value is None:
        return None
    try:
        return dollars(value)
    except ValueError as exc:
        fields.error(name, value, str(exc))
        return None


def dollars(value: float | int | str) -> int:
    """A spend limit in dollars (``200``, ``12.5``, ``"12.5"``) as whole micro-dollars."""
    bounds = f"must be more than 0 and at most {MAX_SPEND} dollars"
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("is not a number of dollars (e.g. 200 or 12.50)")
    if isinstance(value, int) and not 0 < value <= MAX_SPEND:
        raise ValueError(bounds)  # checked first: float(10**400) raises OverflowError
    try:
        amount = float(value)
    except ValueError:
        raise ValueError("is not a number of dollars (e.g. 200 or 12.50)") from None
    if not 0 < amount <= MAX_SPEND:  # NaN fails too
        raise ValueError(bounds)
    micro = round(amount * MICRO)
    if micro < 1:
        raise ValueError("must be at least 0.000001 dollars")
    return micro
