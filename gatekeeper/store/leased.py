"""Lease mode: a replica decides locally from a slice of a limit's budget it took from Redis.

A round trip to Redis costs more than everything else gatekeeper does for a request, so for a
counter in lease mode (``lease:`` in the policy, ``Counter.slice`` > 0) each replica takes
``slice`` units at a time from the shared store, with an ordinary ``apply`` of cost ``slice``
on the counter's own key (GCRA and quotas both take a bulk cost), and hands them out from
memory. When a slice falls to half, one top-up per counter goes out in the background (every
leased counter of the plan below its slice is topped up in the same call), so the hot path
stays local; a request waits for the store only when its slice is empty (then, if the store
refuses, later requests are refused locally until the store's ``retry_after``).

Token and spend reservations are taken from the slice too, and ``reconcile`` only moves the
replica's count (``held``): the difference reaches the store with the next top-up (it asks
``slice - held``) or when the slice lapses. A slice lapses ``ttl`` seconds after its last use:
its unused units are handed back then (one reconcile, in the background), so an idle replica
does not sit on budget. Concurrency in lease mode is counted in each replica's memory, with
``slice`` slots per replica (the shared count is not consulted).

Bound: a replica never holds more than ``slice`` units of a counter (top-ups ask
``slice - held``; one fetch per counter at a time), and it only hands out units the store
granted. So over any interval, the requests all replicas allow exceed what strict mode would
allow by at most ``replicas x slice`` (units granted before the interval and spent in it), and
a request is refused while the store could still serve it only for want of units other
replicas hold: at most ``replicas x slice`` short.

Failures: the store calls go through ``GuardedCounters`` like strict ones, so a hot-path
fetch follows ``on_store_error``; a failed top-up or hand-back is logged and retried with the
next one (a slice keeps serving what it holds).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from gatekeeper.errors import StoreError
from gatekeeper.limits.plan import CONCURRENCY, Counter, CounterAnswer, Lease, Plan
from gatekeeper.store.counters import Correction, CounterStore
from gatekeeper.store.memory_counters import MemoryCounterStore

log = logging.getLogger("gatekeeper")

_LOCAL = "\0lease:"
"""Marks a concurrency slot counted in this replica's memory: its release stays here."""
TICK = 0.25
"""Seconds between the background passes that hand back lapsed slices."""
ROUNDS = 4
"""How often one request re-checks its slices after waiting for fetches before it asks the
store directly (strict) for its leased counters."""


class _Slice:
    """One counter's slice in this replica."""

    __slots__ = ("counter", "expires", "fetch", "held", "quiet_until", "refused",
                 "refused_until", "remote", "reset_at")

    def __init__(self, counter: Counter, now: float) -> None:
        self.counter = counter
        self.held = 0
        """Units taken from the store and not handed out (below 0: usage not yet charged)."""
        self.expires = now + counter.ttl
        """Unix seconds: unused units go back then, unless the slice is used before."""
        self.fetch: asyncio.Future[None] | None = None
        """The store call in flight for this counter (at most one)."""
        self.remote = 0
        """The store's ``remaining`` at the last grant: the headers show ``held + remote``."""
        self.reset_at = 0.0
        self.refused_until = 0.0
        """The store refused a fetch: requests short of units are refused here until then."""
        self.refused: CounterAnswer | None = None
        self.quiet_until = 0.0
        """A top-up was refused: no background top-up until then."""


class LeasedCounters(CounterStore):
    """Wraps the shared store; plans without a leased counter go straight through."""

    def __init__(self, store: CounterStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.local = MemoryCounterStore()
        """Lease-mode concurrency slots, counted in this replica."""
        self._slices: dict[str, _Slice] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._failing = False

    # --- the hot path ------------------------------------------------------------------------

    def apply(self, plan: Plan, now: float) -> Coroutine[Any, Any, list[CounterAnswer]]:
        """A strict plan goes to the store as is (no extra coroutine on its path)."""
        for c in plan:
            if c[8]:  # slice
                return super().apply(plan, now)
        return self.store.apply(plan, now)

    def release(self, leases: Sequence[Lease], now: float) -> Coroutine[Any, Any, int]:
        for x in leases:
            if x.key.startswith(_LOCAL):
                return super().release(leases, now)
        return self.store.release(leases, now)

    def settle(self, leases: Sequence[Lease], corrections: Sequence[Correction],
               now: float) -> Coroutine[Any, Any, int]:
        """Only what concerns the store goes to it, in one call: leased counters' corrections
        move their slices, lease-mode slots go back here."""
        for x in leases:
            if x.key.startswith(_LOCAL):
                return super().settle(leases, corrections, now)
        for c in corrections:
            if c[0][8]:  # slice
                return super().settle(leases, corrections, now)
        return self.store.settle(leases, corrections, now)

    def settle_later(self, leases: Sequence[Lease], corrections: Sequence[Correction],
                     now: float) -> None:
        """As ``settle``: a strict request's end is queued in the store as it is."""
        for x in leases:
            if x.key.startswith(_LOCAL):
                break
        else:
            for c in corrections:
                if c[0][8]:  # slice
                    break
            else:
                self.store.settle_later(leases, corrections, now)
                return
        _, there, strict = self._settle_here(leases, corrections, now)
        if there or strict:
            self.store.settle_later(there, strict, now)

    def reconcile(self, counter: Counter, reserved: int,
                  actual: int, now: float) -> Coroutine[Any, Any, None]:
        """In lease mode only the slice moves (no I/O): the store hears of it with the next
        top-up or when the slice lapses."""
        if not counter.slice:
            return self.store.reconcile(counter, reserved, actual, now)
        self._move(counter, reserved - actual, now)
        return _nothing()

    def _move(self, counter: Counter, units: int, now: float) -> None:
        """A leased counter's correction: its slice gains ``units`` (loses, below 0)."""
        s = self._slices.get(counter.key)
        if s is None:
            s = self._slices[counter.key] = _Slice(counter, now)
        s.held += units

    async def _apply(self, plan: Plan, now: float) -> list[CounterAnswer]:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())
        taken = self._take(plan, now)
        if taken is None:  # a slice is short: wait for it, or fetch it
            for _ in range(ROUNDS):
                shorts, waits = self._shortfall(plan, now)
                if waits:
                    await asyncio.wait(waits)
                elif shorts:
                    refused = self._refused_here(plan, shorts, now)
                    if refused is None:
                        refused = await self._fetch_now(plan, shorts, now)
                    if refused is not None:
                        return refused
                taken = self._take(plan, now)
                if taken is not None:
                    break
            else:  # every round found its slices drained by others meanwhile: ask directly
                return await self.store.apply(tuple(c._replace(slice=0) for c in plan), now)
        answers, slots_allowed = taken
        if not slots_allowed:
            return _refused(plan, answers)
        strict = [i for i, a in enumerate(answers) if a is None]
        if not strict:
            return answers  # type: ignore[return-value]  # no None left
        try:
            remote = await self.store.apply(tuple(plan[i] for i in strict), now)
        except BaseException as exc:
            await self._undo(plan, answers, now)
            raise exc  # named: compiled, a bare raise after an await is not this one
        for i, a in zip(strict, remote, strict=True):
            answers[i] = a
        if not all(a.allowed for a in remote):
            await self._undo(plan, answers, now)
            return _refused(plan, answers)
        return answers  # type: ignore[return-value]

    def _take(self, plan: Plan,
              now: float) -> tuple[list[CounterAnswer | None], bool] | None:
        """Take every leased counter's units from its slice and the local slots, in one pass
        with no await: the answers (None for the strict counters) and whether the slots
        allowed (if not, the units went back); None (nothing taken) when a slice is short."""
        answers: list[CounterAnswer | None] = []
        slices = self._slices
        top_up = slots = False
        for c in plan:
            size = c[8]
            if not size:
                answers.append(None)
                continue
            if c[0] == CONCURRENCY:
                slots = True
                answers.append(None)
                continue
            s = slices.get(c[1])
            if s is None or s.held < c[5]:
                self._give_back(plan, answers)
                return None
            s.held -= c[5]
            s.counter, s.expires = c, now + c[9]
            reset = s.reset_at - now
            left = s.held + s.remote
            answers.append(_new(CounterAnswer, (True, left if left > 0 else 0,
                                                reset if reset > 0 else 0.0, 0.0, None)))
            if s.held * 2 <= size and s.fetch is None and s.quiet_until <= now:
                top_up = True
        if top_up:
            self._top_up(plan, now)
        verdict = True
        if slots:
            index = [i for i, c in enumerate(plan) if c[8] and c[0] == CONCURRENCY]
            local = self.local.apply_now(tuple(_new(Counter, (*plan[i][:3], plan[i][8],
                                                              *plan[i][4:])) for i in index),
                                         now)
            for i, a in zip(index, local, strict=True):
                answers[i] = a if a[4] is None else \
                    a._replace(lease=_new(Lease, (_LOCAL + a[4][0], a[4][1])))
                verdict = verdict and a[0]
            if not verdict:
                self._give_back(plan, answers)
        return answers, verdict

    def _shortfall(self, plan: Plan, now: float) -> tuple[list[int], list[asyncio.Future[None]]]:
        """The leased counters this plan cannot take from their slices, and the fetches in
        flight for them (wait for those rather than fetch twice)."""
        shorts: list[int] = []
        waits: list[asyncio.Future[None]] = []
        want: dict[str, int] = {}
        for i, c in enumerate(plan):
            if not c.slice or c.kind == CONCURRENCY:
                continue
            s = self._slices.get(c.key)
            want[c.key] = want.get(c.key, 0) + c.cost
            if s is None or s.held < want[c.key]:
                if s is not None and s.fetch is not None:
                    waits.append(s.fetch)
                else:
                    shorts.append(i)
        return shorts, waits

    def _give_back(self, plan: Plan, answers: Sequence[CounterAnswer | None]) -> None:
        """Undo the slice takes of the counters answered so far (all of them, once done)."""
        for c, a in zip(plan, answers, strict=False):
            if a is not None and c.slice and c.kind != CONCURRENCY:
                self._slices[c.key].held += c.cost

    async def _undo(self, plan: Plan, answers: list[CounterAnswer | None], now: float) -> None:
        self._give_back(plan, answers)
        slots = [a.lease for a in answers if a is not None and a.lease is not None
                 and a.lease.key.startswith(_LOCAL)]
        if slots:
            await self._release(slots, now)

    def _refused_here(self, plan: Plan, shorts: list[int],
                      now: float) -> list[CounterAnswer] | None:
        """Refused without a round trip: a short counter the store refused moments ago."""
        answers: list[CounterAnswer | None] = [None] * len(plan)
        found = False
        for i in shorts:
            s = self._slices.get(plan[i].key)
            if s is not None and s.refused is not None and now < s.refused_until:
                wait = s.refused_until - now
                answers[i] = s.refused._replace(retry_after=wait,
                                                reset_after=max(wait, s.refused.reset_after))
                found = True
        return _refused(plan, answers) if found else None

    async def _fetch_now(self, plan: Plan, shorts: list[int],
                         now: float) -> list[CounterAnswer] | None:
        """Fill the short slices from the store (the request waits): a whole slice if the
        store has it, else just this request's need; the answers if it refuses."""
        slices = []
        for i in shorts:
            c = plan[i]
            s = self._slices.get(c.key)
            if s is None:
                s = self._slices[c.key] = _Slice(c, now)
            slices.append(s)
        needs = [max(1, plan[i].cost - s.held) for i, s in zip(shorts, slices, strict=True)]
        fulls = [max(n, plan[i].slice - s.held)
                 for i, s, n in zip(shorts, slices, needs, strict=True)]
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for s in slices:
            s.fetch = done
        try:
            for asks in (fulls, needs) if fulls != needs else (needs,):
                plan_asked = tuple(plan[i]._replace(cost=n, slice=0)
                                   for i, n in zip(shorts, asks, strict=True))
                got = await self.store.apply(plan_asked, now)
                if all(a.allowed for a in got):
                    for s, n, a in zip(slices, asks, got, strict=True):
                        _granted(s, n, a, now)
                    return None
            answers: list[CounterAnswer | None] = [None] * len(plan)
            for i, s, a in zip(shorts, slices, got, strict=True):
                answers[i] = a
                if not a.allowed and a.retry_after != float("inf"):
                    s.refused = a
                    s.refused_until = now + min(a.retry_after, plan[i].ttl)
            return _refused(plan, answers)
        finally:
            for s in slices:
                s.fetch = None
            done.set_result(None)

    # --- in the background -------------------------------------------------------------------

    def _top_up(self, plan: Plan, now: float) -> None:
        """One store call that refills every leased counter of the plan below its slice."""
        chosen = {}
        for c in plan:
            if not c.slice or c.kind == CONCURRENCY:
                continue
            s = self._slices[c.key]
            if s.fetch is None and s.held < c.slice and s.quiet_until <= now:
                chosen[c.key] = s
        if not chosen:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for s in chosen.values():
            s.fetch = done
        self._spawn(self._top_up_now(list(chosen.values()), done))

    async def _top_up_now(self, chosen: list[_Slice], done: asyncio.Future[None]) -> None:
        now, slices = self.clock(), chosen
        try:
            # asked when sent: the slices moved since (a reconcile may even have filled one)
            slices = [s for s in slices if s.held < s.counter.slice]
            asks = [s.counter.slice - s.held for s in slices]
            if not slices:
                return
            plan = tuple(s.counter._replace(cost=n, slice=0)
                         for s, n in zip(slices, asks, strict=True))
            got = await self.store.apply(plan, now)
            if not all(a.allowed for a in got):
                # all or nothing: take what the others would give, each alone, once
                for s, n, a in zip(slices, asks, got, strict=True):
                    if a.allowed:
                        alone = await self.store.apply((s.counter._replace(cost=n, slice=0),), now)
                        if alone[0].allowed:
                            _granted(s, n, alone[0], now)
                    else:
                        # no more top-ups until the store could grant this much: requests
                        # drain the slice, then ask for just their need on their own
                        s.quiet_until = now + min(a.retry_after, s.counter.ttl)
                return
            for s, n, a in zip(slices, asks, got, strict=True):
                _granted(s, n, a, now)
            self._ok()
        except StoreError as exc:
            self._failed("top-up", exc)
        finally:
            for s in chosen:
                s.fetch = None
            done.set_result(None)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                await self.sweep(self.clock())
            except Exception:  # never let the sweeper die: log and go on
                log.exception("lease mode: handing back slices failed")

    async def sweep(self, now: float) -> int:
        """Hand back the unused units of slices idle past their ``ttl`` (and any excess over a
        slice, from reconciled reservations); the number of store calls made."""
        calls = 0
        for key, s in list(self._slices.items()):
            if s.fetch is not None:
                continue
            lapsed = now >= s.expires
            amount = s.held if lapsed else s.held - s.counter.slice
            if amount <= 0 and not (lapsed and amount < 0):
                if lapsed and s.held == 0 and s.refused_until <= now:
                    del self._slices[key]
                continue
            s.held -= amount
            calls += 1
            try:
                # reconcile charges actual - reserved: a negative amount (usage past the
                # reservations) is charged, a positive one handed back
                await self.store.reconcile(s.counter._replace(slice=0), amount, 0, now)
            except StoreError as exc:
                s.held += amount
                self._failed("hand-back", exc)
                continue
            if lapsed and s.held == 0 and self._slices.get(key) is s and s.fetch is None:
                del self._slices[key]
        return calls

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _failed(self, what: str, exc: StoreError) -> None:
        if not self._failing:
            self._failing = True
            log.warning("lease mode: %s failed (%s); slices keep serving what they hold",
                        what, exc)

    def _ok(self) -> None:
        if self._failing:
            self._failing = False
            log.warning("lease mode: the store answers again")

    # --- the rest of the contract ------------------------------------------------------------

    async def _release(self, leases: Sequence[Lease], now: float) -> int:
        return await self._settle(leases, (), now)

    async def _reconcile(self, counter: Counter, reserved: int, actual: int,
                         now: float) -> None:
        await self.reconcile(counter, reserved, actual, now)

    async def _settle(self, leases: Sequence[Lease], corrections: Sequence[Correction],
                      now: float) -> int:
        released, there, strict = self._settle_here(leases, corrections, now)
        if there or strict:
            released += await self.store.settle(there, strict, now)
        return released

    def _settle_here(self, leases: Sequence[Lease], corrections: Sequence[Correction],
                     now: float) -> tuple[int, list[Lease], list[Correction]]:
        """Settle what stays here now (lease-mode slots, leased counters' corrections); the
        store's leases and strict corrections are left."""
        here: list[Lease] = []
        there: list[Lease] = []
        for x in leases:
            if x.key.startswith(_LOCAL):
                here.append(_new(Lease, (x.key[len(_LOCAL):], x.id)))
            else:
                there.append(x)
        strict: list[Correction] = []
        for correction in corrections:
            counter, reserved, actual = correction
            if counter.slice:
                self._move(counter, reserved - actual, now)
            else:
                strict.append(correction)
        released = self.local.release_now(here, now) if here else 0
        return released, there, strict

    def held(self, key: str) -> int:
        """Units of ``key`` this replica holds (for tests and metrics)."""
        s = self._slices.get(key)
        return 0 if s is None else s.held

    async def close(self) -> None:
        await self.stop()
        await self.store.close()

    async def stop(self) -> None:
        """Stop the background work and hand every unused unit back (again: a no-op)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for s in self._slices.values():
            s.expires = 0.0
        with contextlib.suppress(StoreError):
            await self.sweep(self.clock())


_new = tuple.__new__


async def _nothing() -> None:
    """What a lease-mode reconcile awaits: it has already happened."""


def _granted(s: _Slice, units: int, answer: CounterAnswer, now: float) -> None:
    s.held += units
    s.remote = answer.remaining
    s.reset_at = now + answer.reset_after
    s.refused_until, s.refused, s.quiet_until = 0.0, None, 0.0


def _refused(plan: Plan, answers: list[CounterAnswer | None]) -> list[CounterAnswer]:
    """The whole plan refused: the counters not asked answer 'would allow', holding nothing."""
    return [CounterAnswer(True, c.limit, 0.0, 0.0) if a is None else a._replace(lease=None)
            for c, a in zip(plan, answers, strict=True)]
