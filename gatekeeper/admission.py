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
from collections.abc import Awaitable, Sequence

from gatekeeper import reasons
from gatekeeper.clock import Clock
from gatekeeper.decision import Decision
from gatekeeper.errors import StoreError
from gatekeeper.facts import RequestFacts
from gatekeeper.limits.answer import outcome
from gatekeeper.limits.plan import (
    CONCURRENCY,
    QUOTA,
    REQUESTS,
    Counter,
    Lease,
    Plan,
    build_plan,
    credential_part,
)
from gatekeeper.networks import IPAddr
from gatekeeper.policy.limits import TenantLimits
from gatekeeper.policy.model import Policy
from gatekeeper.responder import Responder, Usage
from gatekeeper.store.counters import CounterStore, EmbeddedCounterStore

log = logging.getLogger("gatekeeper")


class Admission:
    """One credential's limits from one client, compiled for its decision record. The record
    key fixes the client address, so the plan of a request that charges no tokens is built
    once and reused as is."""

    __slots__ = ("charges_tokens", "client", "credential", "limits", "plan", "tenant")

    def __init__(self, tenant: str, credential: str, client: IPAddr | None,
                 limits: TenantLimits) -> None:
        self.tenant = tenant
        self.credential = credential
        self.client = client
        self.limits = limits
        self.charges_tokens = limits.charges_tokens
        self.plan: Plan | None = None if limits.charges_tokens else \
            build_plan(tenant, credential, client, limits)

    def plan_for(self, estimate: int) -> Plan:
        plan = self.plan
        if plan is None:
            return build_plan(self.tenant, self.credential, self.client, self.limits, estimate)
        return plan


def admission_for(policy: Policy, decision: Decision, facts: RequestFacts) -> Admission | None:
    """None when the credential's tenant has nothing left to check (the common case)."""
    principal = decision.principal
    tenant = policy.tenants.get(decision.tenant or "")
    if principal is None or tenant is None or tenant.limits.empty:
        return None
    return Admission(principal.tenant, credential_part(principal.kind, principal.key_id),
                     facts.client, tenant.limits)


class Charge:
    """What one admitted request took from the store, given back or corrected exactly once by
    ``settle`` (the Responder calls it once, however the exchange ends)."""

    __slots__ = ("clock", "counters", "estimate", "leases", "plan")

    def __init__(self, counters: CounterStore, clock: Clock, plan: Plan,
                 leases: Sequence[Lease], estimate: int) -> None:
        self.counters = counters
        self.clock = clock
        self.plan = plan
        self.leases = leases
        self.estimate = estimate

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
        if usage is not None:
            for counter in self._reconciled():
                counters.reconcile_now(counter, self.estimate, usage.total_tokens, now)
        return None

    async def finish(self, usage: Usage | None, now: float) -> None:
        """Release the slots; correct the token reservation when the real usage is known
        (unknown usage keeps the reservation: the estimate is what the request cost)."""
        if self.leases:
            await self.counters.release(self.leases, now)
        if usage is not None:
            for counter in self._reconciled():
                await self.counters.reconcile(counter, self.estimate, usage.total_tokens, now)

    def _reconciled(self) -> list[Counter]:
        return [c for c in self.plan if c.unit != REQUESTS and c.kind != CONCURRENCY]


async def admit(counters: CounterStore, clock: Clock, admission: Admission, decision: Decision,
                now: float, estimate: int = 0) -> tuple[Decision, Charge | None]:
    """The final decision after the limits (with its rate-limit headers) and the charge to
    settle when the response ends (None when there is nothing to give back or correct)."""
    plan = admission.plan_for(estimate)
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
    if result.leases or admission.charges_tokens:
        return allowed, Charge(counters, clock, plan, result.leases, estimate)
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
