"""The charge of one admitted request: what it took from the counter store, given back or
corrected exactly once when its response ends (concurrency slots released, token and spend
reservations reconciled with the upstream's real usage), in ONE store call, never awaited
(Redis queues it to ride inside the next apply). The Responder calls ``settle``."""

from __future__ import annotations

from collections.abc import Sequence

from gatekeeper.clock import Clock
from gatekeeper.limits.plan import TOKENS, Lease, Plan
from gatekeeper.limits.spend import Prices, spend_of
from gatekeeper.responder import Responder
from gatekeeper.store.counters import Correction, CounterStore, EmbeddedCounterStore
from gatekeeper.store.memory_counters import MemoryCounterStore
from gatekeeper.store.memory_plan import Compiled, Costs
from gatekeeper.usage import Usage


class Charge:
    """What one admitted request took from the store, given back or corrected exactly once by
    ``settle`` (the Responder calls it once, however the exchange ends)."""

    __slots__ = ("clock", "counters", "leases", "model", "plan", "priced", "prices")

    def __init__(self, counters: CounterStore, clock: Clock, plan: Plan,
                 leases: Sequence[Lease], priced: tuple[int, ...] = (),
                 prices: Prices | None = None, model: str = "") -> None:
        """``priced``: where the plan's token and spend counters are; ``prices``: None when
        no counter counts spend."""
        self.counters = counters
        self.clock = clock
        self.plan = plan
        self.leases = leases
        self.priced = priced
        self.prices = prices
        self.model = model

    def settle(self, responder: Responder | None) -> None:
        """The Responder's settle (``responder`` is None for a websocket, which only gives its
        slots back). An in-process store settles at once; another queues it
        (``CounterStore.settle_later``): nothing for the Responder to await."""
        usage = None if responder is None else responder.usage
        corrections = () if usage is None or not self.priced else self._corrections(usage)
        if not self.leases and not corrections:
            return None
        counters = self.counters
        if not counters.embedded:
            counters.settle_later(self.leases, corrections, self.clock.now())
            return None
        embedded: EmbeddedCounterStore = counters  # type: ignore[assignment]  # it said so
        embedded.settle_now(self.leases, corrections, self.clock.now())
        return None

    async def finish(self, usage: Usage | None, now: float) -> None:
        """Release the slots; correct the token and spend reservations when the real usage is
        known (unknown usage keeps them: the estimate is what the request cost)."""
        corrections = () if usage is None or not self.priced else self._corrections(usage)
        if self.leases or corrections:
            await self.counters.settle(self.leases, corrections, now)

    def _corrections(self, usage: Usage) -> list[Correction]:
        plan, tokens = self.plan, usage[2]
        spend = 0 if self.prices is None else \
            spend_of(self.prices, self.model, usage[0], usage[1])
        out: list[Correction] = []
        for i in self.priced:
            c = plan[i]
            out.append((c, c[5], tokens if c[6] == TOKENS else spend))
        return out


class LocalCharge:
    """``Charge`` for a request the memory store charged with ``take`` (a compiled plan):
    settled with ``give``, at once, in the same call however the exchange ended."""

    __slots__ = ("clock", "costs", "counters", "leases", "model", "priced", "prices")

    def __init__(self, counters: MemoryCounterStore, clock: Clock, priced: Compiled,
                 leases: Sequence[Lease], costs: Costs, prices: Prices | None,
                 model: str) -> None:
        """``priced``: the compiled plan's token and spend counters (what usage corrects);
        ``costs``: what ``take`` reserved, ``(1, tokens, spend)``; ``prices``: None when no
        counter counts spend."""
        self.counters = counters
        self.clock = clock
        self.priced = priced
        self.leases = leases
        self.costs = costs
        self.prices = prices
        self.model = model

    def settle(self, responder: Responder | None) -> None:
        usage = None if responder is None or not self.priced else responder.usage
        if usage is None and not self.leases:
            return None
        self.counters.give(self.priced, self.leases, self.costs, self._actual(usage),
                           self.clock.now())
        return None

    async def finish(self, usage: Usage | None, now: float) -> None:
        self.counters.give(self.priced, self.leases, self.costs,
                           self._actual(usage if self.priced else None), now)

    def _actual(self, usage: Usage | None) -> Costs:
        """What the request cost: its usage priced, or, unknown, what it reserved (the
        estimate is then what the request cost)."""
        if usage is None:
            return self.costs
        prices = self.prices
        return (1, usage[2], 0 if prices is None else
                spend_of(prices, self.model, usage[0], usage[1]))


AnyCharge = Charge | LocalCharge
"""What an admitted request's settle is called on."""
