"""The charge of one admitted request: what it took from the counter store, given back or
corrected exactly once when its response ends (concurrency slots released, token and spend
reservations reconciled with the upstream's real usage). The Responder calls ``settle``."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import cast

from gatekeeper.clock import Clock
from gatekeeper.limits.plan import CONCURRENCY, REQUESTS, Counter, Lease, Plan, settled_cost
from gatekeeper.limits.spend import Prices, spend_of
from gatekeeper.responder import Responder, Usage
from gatekeeper.store.counters import CounterStore, EmbeddedCounterStore


class Charge:
    """What one admitted request took from the store, given back or corrected exactly once by
    ``settle`` (the Responder calls it once, however the exchange ends)."""

    __slots__ = ("clock", "counters", "leases", "model", "plan", "prices")

    def __init__(self, counters: CounterStore, clock: Clock, plan: Plan,
                 leases: Sequence[Lease], prices: Prices | None = None, model: str = "") -> None:
        """``prices``: None when no counter counts spend."""
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
        if not counters.embedded:
            return self.finish(usage, now)
        counters = cast(EmbeddedCounterStore, counters)  # ``embedded`` said so; no ABC check
        if self.leases:
            counters.release_now(self.leases, now)
        for counter, actual in self._corrections(usage):
            counters.reconcile_now(counter, counter.cost, actual, now)
        return None

    async def finish(self, usage: Usage | None, now: float) -> None:
        """Release the slots and correct the token and spend reservations when the real usage
        is known (unknown usage keeps them: the estimate is what the request cost), in one
        store call (none when there is nothing to do)."""
        await self.counters.settle(self.leases, [(counter, counter.cost, actual) for
                                                 counter, actual in self._corrections(usage)], now)

    def _corrections(self, usage: Usage | None) -> list[tuple[Counter, int]]:
        if usage is None:
            return []
        spend = 0 if self.prices is None else \
            spend_of(self.prices, self.model, usage.prompt_tokens, usage.completion_tokens)
        return [(c, settled_cost(c, usage.total_tokens, spend)) for c in self.plan
                if c.unit != REQUESTS and c.kind != CONCURRENCY]
