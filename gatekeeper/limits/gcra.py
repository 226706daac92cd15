"""GCRA, the generic cell rate algorithm, as one pure function over integers.

Why GCRA: it keeps one number per counter (the theoretical arrival time, ``tat``), it needs no
window, and it has no window edge: at no instant can more than ``burst`` cost units pass, and
over any interval of length ``d`` at most ``burst + d * limit / period`` pass. A fixed window
lets twice its limit through around an edge; a sliding-window counter only approximates.

Exactness: time is counted in whole microseconds (a float Unix time carries about 0.24 us of
precision today, so nothing finer is real), and ``tat`` is kept in units of ``1/limit``
microseconds. One cost unit then advances ``tat`` by exactly ``period_us``, so every step is
integer arithmetic: ``limit`` requests in a burst pass and the next is refused, with no float
drift however long the counter lives. ``retry_after`` and ``reset_after`` are converted to
float seconds only on the way out.

A ``cost`` larger than ``burst`` can never pass (no amount of waiting makes room for it): the
answer is refused with ``retry_after = inf``, so the caller can say "too large" rather than
"wait".
"""

from __future__ import annotations

import math
from typing import Final, NamedTuple

US: Final = 1_000_000
"""Microseconds per second: the resolution of every limit."""


class GcraAnswer(NamedTuple):
    allowed: bool
    tat: int
    """The new theoretical arrival time (units of 1/limit us); unchanged when refused."""
    remaining: int
    """Cost units that could still pass at this instant."""
    reset_after: float
    """Seconds until the counter is back to its full burst."""
    retry_after: float
    """Seconds until this cost could pass (0 when allowed, inf when it never can)."""


def to_us(now: float) -> int:
    """Unix seconds to whole microseconds, rounded as ``round()`` rounds (half to even), so
    1.7e9 + 0.05 is exactly 50 000 us on. Written out: compiled, ``round()`` is a call into
    Python and this runs on every limited request."""
    x = now * US
    if not 0.0 <= x < 4e18:  # negative, huge or NaN: round() says what it is
        return round(x)
    whole = int(x)  # truncated: the floor of a positive number
    rest = x - whole
    if rest > 0.5 or (rest == 0.5 and whole & 1):
        whole += 1
    return whole


def gcra(tat: int, now_us: int, limit: int, period_us: int, burst: int,
         cost: int = 1) -> GcraAnswer:
    """Charge ``cost`` against a rate of ``limit`` per ``period_us`` with room for ``burst``.

    ``tat`` is the previous answer's ``tat`` (0 for a fresh counter). A refused call leaves
    ``tat`` unchanged: nothing is charged.
    """
    now = now_us * limit
    tau = burst * period_us
    if tat < now:
        tat = now
    new_tat = tat + cost * period_us
    allow_at = new_tat - tau
    scale = limit * US
    if now < allow_at:
        retry = math.inf if cost > burst else (allow_at - now) / scale
        return _new(GcraAnswer, (False, tat, max(0, (tau - (tat - now)) // period_us),
                                 (tat - now) / scale, retry))
    return _new(GcraAnswer, (True, new_tat, (now - allow_at) // period_us,
                             (new_tat - now) / scale, 0.0))


_new: Final = tuple.__new__
"""``_new(GcraAnswer, (...))`` skips the NamedTuple's keyword-parsing ``__new__``: this runs
once per rate counter per request."""


def refund(tat: int, now_us: int, limit: int, period_us: int, cost: int) -> int:
    """``tat`` with ``cost`` units handed back (negative ``cost`` charges more), never earlier
    than now: a counter cannot hold credit beyond its full burst."""
    now = now_us * limit
    return max(max(tat, now) - cost * period_us, now)
