"""A circuit breaker: when the store is down, an outage costs microseconds per request, not a
timeout each.

After ``threshold`` consecutive failures the breaker opens: calls are refused at once for
``cooldown`` seconds (doubling on every failed trial, up to ``max_cooldown``). Then one call
is let through as a trial (all calls arriving then are: on a busy server, several); its
success closes the breaker, its failure opens it again (once, however many trials fail).
Plain state on the monotonic clock, touched only from the event loop thread.
"""

from __future__ import annotations

from collections.abc import Callable

THRESHOLD = 3
COOLDOWN = 0.5
MAX_COOLDOWN = 8.0


class Breaker:
    __slots__ = ("_cooldown", "_failures", "_monotonic", "_open_until", "max_cooldown",
                 "threshold")

    def __init__(self, monotonic: Callable[[], float], threshold: int = THRESHOLD,
                 cooldown: float = COOLDOWN, max_cooldown: float = MAX_COOLDOWN) -> None:
        self._monotonic = monotonic
        self.threshold = threshold
        self.max_cooldown = max_cooldown
        self._cooldown = cooldown
        self._failures = 0
        self._open_until = 0.0

    @property
    def open(self) -> bool:
        return self._failures >= self.threshold

    def allow(self) -> bool:
        """May a call be made now (closed, or a trial after the cooldown)?"""
        return self._failures < self.threshold or self._monotonic() >= self._open_until

    def success(self) -> None:
        self._failures = 0
        self._cooldown = COOLDOWN

    def failure(self) -> None:
        self._failures += 1
        if self._failures >= self.threshold:
            now = self._monotonic()
            if now < self._open_until:
                # already open: a call that set out before it opened, or one of several
                # trials let through together whose first failure reopened it; counting
                # each would take the cooldown to its maximum after one failed round
                return
            if self._failures > self.threshold:  # a failed trial: wait longer next time
                self._cooldown = min(self._cooldown * 2, self.max_cooldown)
            self._open_until = now + self._cooldown
