"""What the memory store's fast path works on: a limits plan compiled once (``compile_plan``:
one ``Rule`` per counter) and the ``Cell`` each counter's state lives in. Both are native
objects once compiled, so ``take`` and ``give`` (``memory_counters.py``) do their arithmetic
on machine words, not on boxed Python ints.
"""

from __future__ import annotations

from typing import Final

from gatekeeper.limits.gcra import US
from gatekeeper.limits.plan import CONCURRENCY, QUOTA, RATE, REQUESTS, SPEND, TOKENS, Plan


class Cell:
    """One counter's state: a rate's ``tat`` (``value`` us + ``frac``/limit us), a quota's
    units used (``value``; it expires at its window's end), a concurrency counter's slots
    (``held``: lease id -> expiry in us)."""

    __slots__ = ("expires", "frac", "held", "used", "value")

    def __init__(self, expires: int, value: int, frac: int = 0,
                 held: dict[int, int] | None = None) -> None:
        self.expires = expires
        """Microseconds: at this instant the counter is as if never charged."""
        self.value = value
        self.frac = frac
        self.held = held
        self.used = True
        """Charged since the sweep last looked at it (the CLOCK bit)."""

    def copy(self) -> Cell:
        return Cell(self.expires, self.value, self.frac,
                    None if self.held is None else dict(self.held))

    def plain(self) -> tuple[int, int, int, dict[int, int] | None]:
        """The state as plain data (tests compare two stores with it)."""
        return self.expires, self.value, self.frac, self.held


class Rule:
    """One counter of a compiled plan (``compile_plan``), for ``take`` and ``give``."""

    __slots__ = ("cell", "code", "end_us", "held", "key", "left", "limit", "new_frac",
                 "new_value", "period_us", "rem", "reset", "step", "unit")

    def __init__(self, code: int, key: str, limit: int, period_us: int, unit: int,
                 end_us: int) -> None:
        self.code = code
        self.key = key
        self.limit = limit
        self.period_us = period_us
        self.unit = unit
        """The index of its cost in ``Costs``: 0 requests, 1 tokens, 2 spend."""
        self.end_us = end_us
        """A quota's window end."""
        self.step = period_us // limit if limit > 0 else 0
        """One unit's emission interval, whole microseconds ..."""
        self.rem = period_us % limit if limit > 0 else 0
        """... and the rest, in 1/limit microseconds."""
        # take's scratch, between its check and its charge
        self.cell: Cell | None = None
        self.new_value = 0
        self.new_frac = 0
        self.held: dict[int, int] | None = None
        # take's answer: what is left after the charge, and seconds until full again
        self.left = 0
        self.reset = 0.0


RATE_RULE: Final = 0
SLOT_RULE: Final = 1
QUOTA_RULE: Final = 2
RULE_CODES = {RATE: RATE_RULE, CONCURRENCY: SLOT_RULE, QUOTA: QUOTA_RULE}
UNIT_NAMES: Final = (REQUESTS, TOKENS, SPEND)
"""A compiled counter's unit, by its index in ``Costs``."""
UNIT_INDEX = {name: i for i, name in enumerate(UNIT_NAMES)}
Costs = tuple[int, int, int]
"""What one request costs each unit's counters: ``(1, tokens, spend)``."""
NO_COSTS: Costs = (0, 0, 0)

Compiled = tuple[Rule, ...]
"""A plan for ``take`` and ``give``."""


def cost_of(costs: Costs, unit: int) -> int:
    """``costs[unit]``: compiled, ``Costs`` is a C struct, and indexing it with a variable
    first boxes it into a new tuple of new ints (per counter, per request)."""
    if unit == 0:
        return costs[0]
    return costs[1] if unit == 1 else costs[2]


def compile_plan(plan: Plan) -> Compiled | None:
    """``plan`` for ``take`` and ``give``, once per plan (``Admission`` builds it with the plan);
    None for the plans they leave to ``apply_now``: a key named twice, a request counter that
    costs more than one, a quota without its window end (hand-built plans)."""
    out = []
    for c in plan:
        unit = UNIT_INDEX[c.unit]
        if (c.kind == QUOTA and not c.expires) or (unit == 0 and c.cost != 1):
            return None
        out.append(Rule(RULE_CODES[c.kind], c.key, c.limit, round(c.period * US), unit,
                        round(c.expires * US)))
    if len({c.key for c in plan}) != len(plan):
        return None
    return tuple(out)
