"""The counter capability: limit counters, separate from key records.

A backend may offer key records (``Store``), counters (``CounterStore``) or both, so the
default composes SQLite key records with counters in process memory, and the Redis store can
offer both in one connection. The public calls wrap every backend failure once, here, in a
``StoreError`` (the decision's fail rule then applies), so backends raise whatever their
client raises.

Contract (``tests/store/test_counter_contract.py`` runs it against every backend):

* ``apply(plan, now)`` is all-or-nothing: it answers every counter, and charges them all only
  when every one allows; a refused plan changes nothing. It is one atomic step (memory: no
  await inside; Redis: one Lua script), so concurrent requests never overshoot a limit.
* time is only the ``now`` passed in (Unix seconds), never a clock read inside a backend, so
  replay and tests decide time.
* a concurrency slot is a lease: taken by ``apply``, given back by ``release`` exactly once
  (a second release is a no-op), and forgotten at its expiry if its holder died.
* ``reconcile`` corrects a token reservation with the real usage, once per reservation (the
  caller's settle runs once); counts never go below zero.
* ``settle(leases, corrections, now)`` is ``release`` of every lease plus ``reconcile`` of every
  correction, what one response's end needs, in one call where the backend can (Redis: one
  script).
* ``settle_later`` is ``settle`` without waiting for it, what a response's end calls: memory
  settles at once; Redis queues it to ride inside the next apply (so a request costs one round
  trip), sent at most once (a failure drops it; a slot whose release was lost is freed at its
  lease's expiry); the default runs ``settle`` in a task.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence

from gatekeeper.errors import GatekeeperError, StoreError
from gatekeeper.limits.plan import Counter, CounterAnswer, Lease, Plan

__all__ = ["Correction", "CounterAnswer", "CounterStore", "EmbeddedCounterStore", "Lease"]

log = logging.getLogger("gatekeeper")
_SETTLING: set[asyncio.Task[int]] = set()
"""The default ``settle_later``'s tasks, held until done."""

Correction = tuple[Counter, int, int]
"""``(counter, reserved, actual)``: what ``reconcile`` takes, for ``settle``."""


class CounterStore(ABC):
    embedded = False
    """Answers without I/O (``EmbeddedCounterStore``): callers may use its ``*_now`` methods.
    A plain class attribute: an ``isinstance`` against an ABC costs more on every request."""

    async def apply(self, plan: Plan, now: float) -> list[CounterAnswer]:
        """One answer per counter, in plan order; charged only if all allow."""
        try:
            return await self._apply(plan, now)
        except GatekeeperError:
            raise
        except Exception as exc:
            raise StoreError("apply", _cause(exc)) from exc

    async def release(self, leases: Sequence[Lease], now: float) -> int:
        """Give slots back; how many were still held (an expired or released one counts 0)."""
        try:
            return await self._release(leases, now)
        except GatekeeperError:
            raise
        except Exception as exc:
            raise StoreError("release", _cause(exc)) from exc

    async def reconcile(self, counter: Counter, reserved: int, actual: int, now: float) -> None:
        """Charge ``actual - reserved`` more units (or hand back the difference) on a rate or
        quota counter charged ``reserved`` by an earlier ``apply``."""
        if reserved == actual:
            return
        try:
            await self._reconcile(counter, reserved, actual, now)
        except GatekeeperError:
            raise
        except Exception as exc:
            raise StoreError("reconcile", _cause(exc)) from exc

    async def settle(self, leases: Sequence[Lease], corrections: Sequence[Correction],
                     now: float) -> int:
        """Give ``leases`` back and apply every correction (those with ``reserved == actual``
        are skipped), in one store call where the backend can; how many slots were still
        held. Nothing to do costs no call."""
        if any(reserved == actual for _, reserved, actual in corrections):
            corrections = [c for c in corrections if c[1] != c[2]]
        if not leases and not corrections:
            return 0
        try:
            return await self._settle(leases, corrections, now)
        except GatekeeperError:
            raise
        except Exception as exc:
            raise StoreError("settle", _cause(exc)) from exc

    def settle_later(self, leases: Sequence[Lease], corrections: Sequence[Correction],
                     now: float) -> None:
        """``settle`` without waiting (a response's end): the default runs it in a task, and
        logs a failure (the slots are then freed at their leases' expiry)."""
        task = asyncio.get_running_loop().create_task(self.settle(leases, corrections, now))
        _SETTLING.add(task)
        task.add_done_callback(_settled)

    async def _settle(self, leases: Sequence[Lease], corrections: Sequence[Correction],
                      now: float) -> int:
        """The default: ``release``, then one ``reconcile`` per correction (a backend whose
        calls cost a round trip each does it in one instead)."""
        released = await self._release(leases, now) if leases else 0
        for counter, reserved, actual in corrections:
            await self._reconcile(counter, reserved, actual, now)
        return released

    @abstractmethod
    async def _apply(self, plan: Plan, now: float) -> list[CounterAnswer]: ...

    @abstractmethod
    async def _release(self, leases: Sequence[Lease], now: float) -> int: ...

    @abstractmethod
    async def _reconcile(self, counter: Counter, reserved: int, actual: int,
                         now: float) -> None: ...

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class EmbeddedCounterStore(CounterStore):
    """A backend that answers without I/O (memory): it writes plain methods, and its async
    calls are one coroutine each instead of two (this runs on every limited request)."""

    embedded = True

    async def apply(self, plan: Plan, now: float) -> list[CounterAnswer]:
        try:
            return self.apply_now(plan, now)
        except GatekeeperError:
            raise
        except Exception as exc:
            raise StoreError("apply", _cause(exc)) from exc

    async def _apply(self, plan: Plan, now: float) -> list[CounterAnswer]:
        return self.apply_now(plan, now)

    async def _release(self, leases: Sequence[Lease], now: float) -> int:
        return self.release_now(leases, now)

    async def _reconcile(self, counter: Counter, reserved: int, actual: int,
                         now: float) -> None:
        self.reconcile_now(counter, reserved, actual, now)

    async def _settle(self, leases: Sequence[Lease], corrections: Sequence[Correction],
                      now: float) -> int:
        return self.settle_now(leases, corrections, now)

    def settle_later(self, leases: Sequence[Lease], corrections: Sequence[Correction],
                     now: float) -> None:
        self.settle_now(leases, corrections, now)

    def settle_now(self, leases: Sequence[Lease], corrections: Sequence[Correction],
                   now: float) -> int:
        """``settle`` without I/O: one call at a request's end."""
        released = self.release_now(leases, now) if leases else 0
        for counter, reserved, actual in corrections:
            if reserved != actual:
                self.reconcile_now(counter, reserved, actual, now)
        return released

    @abstractmethod
    def apply_now(self, plan: Plan, now: float) -> list[CounterAnswer]: ...

    @abstractmethod
    def release_now(self, leases: Sequence[Lease], now: float) -> int: ...

    @abstractmethod
    def reconcile_now(self, counter: Counter, reserved: int, actual: int, now: float) -> None:
        ...


def _settled(task: asyncio.Task[int]) -> None:
    _SETTLING.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.warning("settle failed (%s): slots are freed when their leases expire",
                    task.exception())


def _cause(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"
