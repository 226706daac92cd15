"""A remote counter store behind a circuit breaker, with the store-outage rule applied.

``fail_closed`` (the default): while the store fails, or the breaker is open, ``apply`` raises
``StoreError`` at once and the request is refused 503 ``store_unavailable``. ``fail_open``:
the request is charged to a per-process ``MemoryCounterStore`` on the same plan instead, so
limits keep holding in each process (each counts alone) until the store answers again; the
switch each way is logged and shown in ``gatekeeper_store_fail_open``. Counts taken during the
outage are not carried over to the store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from gatekeeper.breaker import Breaker
from gatekeeper.errors import StoreError
from gatekeeper.limits.plan import Counter, CounterAnswer, Lease, Plan
from gatekeeper.store.counters import Correction, CounterStore
from gatekeeper.store.memory_counters import MemoryCounterStore

log = logging.getLogger("gatekeeper")

FAIL_CLOSED = "fail_closed"
FAIL_OPEN = "fail_open"
_LOCAL = "\0local:"
"""Marks a lease the local store handed out, so its release goes back there."""


class GuardedCounters(CounterStore):
    def __init__(self, store: CounterStore, breaker: Breaker, mode: str = FAIL_CLOSED,
                 on_switch: Callable[[bool], None] | None = None) -> None:
        self.store = store
        self.breaker = breaker
        self.mode = mode
        """``fail_closed`` or ``fail_open``; a policy reload sets it."""
        self.local = MemoryCounterStore()
        self.on_switch = on_switch
        self.failing_open = False

    async def _apply(self, plan: Plan, now: float) -> list[CounterAnswer]:
        if self.breaker.allow():
            try:
                answers = await self.store.apply(plan, now)
            except StoreError as exc:
                self.breaker.failure()
                if self.mode != FAIL_OPEN:
                    raise
                self._switch(True, exc)
            else:
                self.breaker.success()
                self._switch(False)
                return answers
        elif self.mode != FAIL_OPEN:
            raise StoreError("apply", "the store is failing (circuit open)")
        self._switch(True)
        return [a if a.lease is None else a._replace(lease=Lease(_LOCAL + a.lease.key,
                                                                 a.lease.id))
                for a in self.local.apply_now(plan, now)]

    async def _release(self, leases: Sequence[Lease], now: float) -> int:
        return await self._settle(leases, (), now)

    async def _reconcile(self, counter: Counter, reserved: int, actual: int,
                         now: float) -> None:
        await self._settle((), ((counter, reserved, actual),), now)

    async def _settle(self, leases: Sequence[Lease], corrections: Sequence[Correction],
                      now: float) -> int:
        """Local leases go back to the local store; the store's are given back to it even with
        the breaker open (a slot not given back would hold its place until its lease ends; a
        failure here is logged by the caller, and the lease expires). Corrections count where
        limits count now: locally while failing open or while the breaker is open."""
        released, remote, corrections = self._settle_here(leases, corrections, now)
        if remote or corrections:
            released += await self.store.settle(remote, corrections, now)
        return released

    def settle_later(self, leases: Sequence[Lease], corrections: Sequence[Correction],
                     now: float) -> None:
        """As ``settle``, what concerns the store queued there (``CounterStore.settle_later``);
        nothing local (the usual case) is passed on as it is."""
        for x in leases:
            if x.key.startswith(_LOCAL):
                break
        else:
            if not corrections or (not self.failing_open and self.breaker.allow()):
                self.store.settle_later(leases, corrections, now)
                return
        _, remote, corrections = self._settle_here(leases, corrections, now)
        if remote or corrections:
            self.store.settle_later(remote, corrections, now)

    def _settle_here(self, leases: Sequence[Lease], corrections: Sequence[Correction],
                     now: float) -> tuple[int, Sequence[Lease], Sequence[Correction]]:
        """Settle what is local now: slots released here, and the leases and corrections
        left for the store."""
        local = [Lease(x.key[len(_LOCAL):], x.id) for x in leases if x.key.startswith(_LOCAL)]
        remote = [x for x in leases if not x.key.startswith(_LOCAL)] if local else leases
        released = self.local.release_now(local, now) if local else 0
        if corrections and (self.failing_open or not self.breaker.allow()):
            for counter, reserved, actual in corrections:
                self.local.reconcile_now(counter, reserved, actual, now)
            corrections = ()
        return released, remote, corrections

    def _switch(self, failing: bool, exc: StoreError | None = None) -> None:
        if failing == self.failing_open:
            return
        self.failing_open = failing
        if failing:
            log.error("counter store failing (%s): fail_open, limits now count in this "
                      "process only", exc or "circuit open")
        else:
            log.warning("counter store answers again: limits count in the store again")
        if self.on_switch is not None:
            self.on_switch(failing)

    async def close(self) -> None:
        await self.store.close()
