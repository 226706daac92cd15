"""Admission: what an allowed credential still has to pass on each request, and its charge.

An ``Admission`` is compiled once per decision record (the credential's tenant limits and its
part of every storage key), so a reused record builds nothing. Per request, ``admit`` builds
the plan, charges it in ONE store call and turns the answers into the final decision; the
``Charge`` it returns is settled exactly once when the response ends (slots released, the
token reservation reconciled with the upstream's usage). Credentials of tenants without limits
get no Admission and never reach this module.

Nothing is charged before the credential is verified: an Admission exists only for an
allowed decision, so a forged or unknown key never costs a victim's quota.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Sequence

from gatekeeper import reasons
from gatekeeper.clock import Clock
from gatekeeper.decision import Decision
from gatekeeper.errors import StoreError
from gatekeeper.facts import RequestFacts
from gatekeeper.limits.answer import outcome
from gatekeeper.limits.overrides import narrow
from gatekeeper.limits.plan import (
    CONCURRENCY,
    EMPTY_PLAN,
    QUOTA,
    REQUESTS,
    Counter,
    Lease,
    Plan,
    build_plan,
    credential_part,
    settled_cost,
)
from gatekeeper.limits.spend import NO_PRICES, Prices, spend_of
from gatekeeper.networks import IPAddr
from gatekeeper.policy.limits import TenantLimits
from gatekeeper.policy.model import Policy
from gatekeeper.responder import Responder, Usage
from gatekeeper.store.counters import CounterStore, EmbeddedCounterStore

log = logging.getLogger("gatekeeper")


class Admission:
    """One credential's limits from one client, compiled for its decision record. The record
    key fixes the client address, so the plan of a request that charges no tokens or spend is
    built once and reused until its first quota window ends."""

    __slots__ = ("client", "credential", "fixed", "limits", "plan", "plan_until", "prices",
                 "reserves", "tenant")

    def __init__(self, tenant: str, credential: str, client: IPAddr | None,
                 limits: TenantLimits, prices: Prices = NO_PRICES) -> None:
        self.tenant = tenant
        self.credential = credential
        self.client = client
        self.limits = limits
        self.prices = prices
        self.reserves = limits.charges_tokens or limits.charges_spend
        """Tokens or spend are reserved per request and reconciled with the usage."""
        self.fixed = not self.reserves
        self.plan: Plan = EMPTY_PLAN
        self.plan_until = -math.inf

    def plan_for(self, now: float, estimate: int = 0, spend: int = 0) -> Plan:
        if now < self.plan_until:
            return self.plan
        plan = build_plan(self.tenant, self.credential, self.client, self.limits, estimate,
                          now=now, spend=spend)
        if self.fixed:
            self.plan = plan
            self.plan_until = min((c.expires for c in plan if c.expires), default=math.inf)
        return plan


def admission_for(policy: Policy, decision: Decision, facts: RequestFacts) -> Admission | None:
    """None when the credential's tenant has nothing left to check (the common case). A key's
    own limits narrow its tenant's, once per decision record."""
    principal = decision.principal
    tenant = policy.tenants.get(decision.tenant or "")
    if principal is None or tenant is None:
        return None
    limits = narrow(tenant.limits, principal.limits)
    if limits.empty:
        return None
    return Admission(principal.tenant, credential_part(principal.kind, principal.key_id),
                     facts.client, limits, policy.prices)


class Charge:
    """What one admitted request took from the store, given back or corrected exactly once by
    ``settle`` (the Responder calls it once, however the exchange ends)."""

    __slots__ = ("clock", "counters", "leases", "model", "plan", "prices")

    def __init__(self, counters: CounterStore, clock: Clock, plan: Plan,
                 leases: Sequence[Lease], prices: Prices = NO_PRICES, model: str = "") -> None:
        self.counters = counters
        self.clock = clock
        self.plan = plan
        self.leases = leases
        self.prices = prices
        self.model = model

    def settle(self, responder: Responder | None) -> Awaitable[None] | None:
        """The Responder's settle (``responder`` is None for a websocket, which only gives its
        slots back). An in-process store settles at once and returns None; another returns
        the coroutine for the Responder to await, shielded and bounded."""
        usage = None if responder is None else responder.usage
        counters, now = self.counters, self.clock.now()
        if not isinstance(counters, EmbeddedCounterStore):
            return self.finish(usage, now)
        if self.leases:
            counters.release_now(self.leases, now)
        for counter, actual in self._corrections(usage):
            counters.reconcile_now(counter, counter.cost, actual, now)
        return None

    async def finish(self, usage: Usage | None, now: float) -> None:
        """Release the slots; correct the token and spend reservations when the real usage is
        known (unknown usage keeps them: the estimate is what the request cost)."""
        if self.leases:
            await self.counters.release(self.leases, now)
        for counter, actual in self._corrections(usage):
            await self.counters.reconcile(counter, counter.cost, actual, now)

    def _corrections(self, usage: Usage | None) -> list[tuple[Counter, int]]:
        if usage is None:
            return []
        spend = spend_of(self.prices, self.model, usage.prompt_tokens, usage.completion_tokens)
        return [(c, settled_cost(c, usage.total_tokens, spend)) for c in self.plan
                if c.unit != REQUESTS and c.kind != CONCURRENCY]


async def admit(counters: CounterStore, clock: Clock, admission: Admission, decision: Decision,
                now: float, estimate: int = 0, model: str = "") -> tuple[Decision, Charge | None]:
    """The final decision after the limits (with its rate-limit headers) and the charge to
    settle when the response ends (None when there is nothing to give back or correct).
    ``estimate`` is the tokens reserved; ``model`` prices the spend reserved and settled."""
    spend = spend_of(admission.prices, model, estimate, 0) if admission.limits.charges_spend \
        else 0
    plan = admission.plan_for(now, estimate, spend)
    try:
        if isinstance(counters, EmbeddedCounterStore):  # no I/O: no second coroutine
            answers = counters.apply_now(plan, now)
        else:
            answers = await counters.apply(plan, now)
    except Exception as exc:
        log.error("limits not checked, refusing (fail closed): %s", _cause(exc))
        return decision._replace(reason=reasons.STORE_UNAVAILABLE, action="block",
                                 detail="counter store unavailable", headers=()), None
    result = outcome(plan, answers)
    if not result.allowed:
        assert result.refused is not None
        return decision._replace(reason=result.reason, action="block", headers=result.headers,
                                 detail=describe(result.refused)), None
    allowed = decision._replace(headers=result.headers) if result.headers else decision
    if result.leases or admission.reserves:
        return allowed, Charge(counters, clock, plan, result.leases, admission.prices, model)
    return allowed, None


def _cause(exc: Exception) -> str:
    return str(exc) if isinstance(exc, StoreError) else f"{type(exc).__name__}: {exc}"


def describe(counter: Counter) -> str:
    """The audit line's name for a counter: scope, unit and limit, never a credential."""
    key = counter.key
    below_tag = key[key.index("}") + 2:]  # "all:rq:60/60" for the tenant, "k<id>:..." for a key
    scope = "client" if key.startswith("gk:{c:") else \
        "tenant" if below_tag.startswith("all:") else "key"
    if counter.kind == CONCURRENCY:
        return f"{scope} concurrency {counter.limit}"
    if counter.kind == QUOTA:
        return f"{scope} {counter.unit} quota {counter.limit}/{counter.period:g}s"
    return f"{scope} {counter.unit} {counter.limit}/{counter.period:g}s"
