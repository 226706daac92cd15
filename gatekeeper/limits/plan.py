"""The plan: every counter one request charges, built by a pure function before the store call.

Storage keys and Redis Cluster hash tags are chosen here, once, so every backend (memory now,
Redis later) sees the same keys:

* a credential's counters and its tenant's share ``{t:<tenant>}``: the counters that decide
  most requests (key + tenant) sit in one slot, so one Lua script charges them atomically;
* a client address's counters use ``{c:<address>}`` (an IPv6 client by its /64), because one
  address spans tenants and cannot live in every tenant's slot.

On one Redis (or the memory store) a plan is one atomic call whatever its tags. On a Cluster a
plan with both tags is split by tag and the groups are charged concurrently; if one refuses,
what the others charged is refunded (``store/redis_cluster.py``); so per-client limits are
all-or-nothing up to that refund, and key and tenant limits exactly so. A JWT subject is
never embedded in a key (it may be an email): its principal id is hashed (SHA-256, 96 bits).
A rate's limit and period are part of its key (``LimitSet.templates`` says why). A quota's
key names its UTC day or month and the counter expires at the window's end
(``limits/windows.py``), so quotas need ``now`` and a plan with quotas is good only until the
window ends (``TenantLimits.windowed``).
"""

from __future__ import annotations

import hashlib
import socket
from typing import NamedTuple

from gatekeeper.limits.windows import windows
from gatekeeper.networks import IPAddr
from gatekeeper.policy.limits import (
    CONCURRENCY,
    DAILY,
    DAY,
    QUOTA,
    RATE,
    REQUESTS,
    SPEND,
    TOKENS,
    Template,
    TenantLimits,
)


class Counter(NamedTuple):
    kind: str
    """``rate`` (GCRA), ``concurrency`` (leased slots) or ``quota`` (a UTC day or month)."""
    key: str
    """The storage key, hash tag included."""
    tag: str
    """The Redis Cluster hash tag, braces included: counters of one tag share a slot."""
    limit: int
    period: float
    """Seconds: the rate's period, the quota's window, the concurrency slot's lease."""
    cost: int
    """What ``apply`` charges: 1 request, the token estimate or the spend estimate."""
    unit: str
    """``requests``, ``tokens`` or ``spend`` (micro-dollars): what the counter counts (and
    which headers it fills)."""
    expires: float = 0.0
    """A quota's window end (Unix seconds; its key names the window): the counter is
    forgotten then. 0: a window aligned to ``period`` (for counters built by hand)."""
    slice: int = 0
    """Lease mode: the units a replica takes from the shared store at a time (concurrency:
    the slots it counts alone); 0 is strict. Only ``store/leased.py`` reads it."""
    ttl: float = 0.0
    """Lease mode: seconds a slice lives after its last top-up."""


class Lease(NamedTuple):
    """A concurrency slot held by one request: its counter's storage key and its id."""

    key: str
    id: int


class CounterAnswer(NamedTuple):
    allowed: bool
    """This counter would allow the request (the plan passes only if every one does)."""
    remaining: int
    """Units left now (after this request's charge when the whole plan passed)."""
    reset_after: float
    """Seconds until the counter is back to its full limit."""
    retry_after: float
    """Seconds until this request could pass here: 0 when allowed, inf when it never can."""
    lease: Lease | None = None
    """The slot taken, for a concurrency counter of a passed plan."""


Plan = tuple[Counter, ...]
"""The counters of one request, in the order they are checked (and reported)."""
EMPTY_PLAN: Plan = ()


def credential_part(kind: str, key_id: str) -> str:
    """What a key names a credential by: an API key's id as is (public, base62), a JWT's
    principal id hashed (its subject may be personal data and may hold any character)."""
    if kind == "jwt":
        return "j" + hashlib.sha256(key_id.encode()).hexdigest()[:24]
    return "k" + key_id


def client_part(client: IPAddr) -> str:
    """An IPv4 address as is; an IPv6 address by its /64 (one host owns a whole /64)."""
    if client.version == 4:
        return client.text
    prefix = (client.value >> 64 << 64).to_bytes(16, "big")
    return socket.inet_ntop(socket.AF_INET6, prefix) + "/64"


def build_plan(tenant: str, credential: str, client: IPAddr | None, limits: TenantLimits,
               estimate: int = 0, *, now: float | None = None, spend: int = 0) -> Plan:
    """The counters a request charges. ``credential`` is ``credential_part(...)``, computed
    once per credential; ``estimate`` is the tokens reserved and ``spend`` the micro-dollars
    reserved (both reconciled after the response). ``now`` (Unix seconds) picks the quota
    windows; it is required when ``limits.windowed``. Requests from an unknown client address
    skip the per-client scope. The counters' key suffixes, limits and periods were precomputed
    with the policy (``TenantLimits``)."""
    if limits.empty:
        return EMPTY_PLAN
    if limits.windowed and now is None:
        raise ValueError("build_plan(..., now=...) is required for limits with quotas: "
                         "their storage keys name the UTC day or month")
    costs = {REQUESTS: 1, TOKENS: estimate, SPEND: spend}
    tag = "{t:" + tenant + "}"
    out: list[Counter] = []
    if limits.key_counters:
        _scope(out, limits.key_counters, tag, "gk:" + tag + ":" + credential, costs, now)
    if limits.tenant_counters:
        _scope(out, limits.tenant_counters, tag, "gk:" + tag + ":all", costs, now)
    if client is not None and limits.client_counters:
        ctag = "{c:" + client_part(client) + "}"
        _scope(out, limits.client_counters, ctag, "gk:" + ctag, costs, now)
    return tuple(out)


def settled_cost(counter: Counter, tokens: int, spend: int) -> int:
    """What a charged counter should have cost, from the real usage (``tokens`` used,
    ``spend`` micro-dollars): the ``actual`` of ``CounterStore.reconcile(counter,
    counter.cost, actual, now)``."""
    if counter.unit == TOKENS:
        return tokens
    if counter.unit == SPEND:
        return spend
    return counter.cost


def _scope(out: list[Counter], templates: tuple[Template, ...], tag: str, base: str,
           costs: dict[str, int], now: float | None) -> None:
    for kind, suffix, limit, period, unit, window, slice_, ttl in templates:
        expires = 0.0
        key = base + suffix
        if window:
            assert now is not None
            found = windows(now)[0 if window == DAILY else 1]
            key += ":" + found.label
            period, expires = found.end - found.start, found.end
        # tuple.__new__ skips the NamedTuple's keyword-parsing __new__ (about 3x cheaper)
        out.append(_new(Counter, (kind, key, tag, limit, period, costs[unit], unit,
                                  expires, slice_, ttl)))


_new = tuple.__new__

__all__ = ["CONCURRENCY", "DAY", "EMPTY_PLAN", "QUOTA", "RATE", "REQUESTS", "SPEND", "TOKENS",
           "Counter", "CounterAnswer", "Lease", "Plan", "build_plan", "client_part",
           "credential_part", "settled_cost"]
