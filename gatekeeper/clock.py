"""Time as a dependency: the middleware reads the system clock; replay and tests inject theirs."""

from __future__ import annotations

import time
from typing import Final, Protocol

_wall: Final = time.time
_monotonic: Final = time.monotonic
"""Bound once: compiled, ``time.time()`` is two attribute look-ups before the call, and the
system clock is read several times per request."""


class Clock(Protocol):
    def now(self) -> float:
        """Unix time in seconds: for expiry, which records and keys state in wall time."""
        ...

    def monotonic(self) -> float:
        """Seconds that never step back: for cache ages, so a wall clock stepped back (NTP,
        a VM restore) cannot keep a revoked key cached."""
        ...


class SystemClock:
    __slots__ = ()

    def now(self) -> float:
        return _wall()

    def monotonic(self) -> float:
        return _monotonic()


class ManualClock:
    """A clock that moves only when told to: replay sets it from records, tests advance it."""

    __slots__ = ("_now",)

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now  # moves only when told to, never back unless ``set`` says so

    def set(self, when: float) -> None:
        self._now = when

    def advance(self, seconds: float) -> None:
        self._now += seconds
