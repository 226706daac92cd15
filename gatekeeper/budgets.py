"""Which budgets one request's charge carried past 80% or 100%: a pure function over the plan
and the store's answers, for the owner's webhooks.

A budget is a quota (a UTC day's or month's requests, tokens or spend) of a key or of its
tenant; rates refill within a minute and a client's counters are not an owner's budget, so
neither is watched. The store charges a counter atomically, so exactly one request carries a
quota across a mark: comparing its use before and after this request's charge finds the
crossing on one replica only, with no state. A refused request reports its exhausted quota
every time; the notifier keeps the first per counter and window (a quota's storage key names
its window). Token reservations are reconciled after the response, so a crossing by an
estimate can come back later; the same deduplication absorbs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from gatekeeper.limits.plan import QUOTA, Counter, CounterAnswer, Plan

WARNING = 80
EXHAUSTED = 100
MARKS = (WARNING, EXHAUSTED)
"""Percent of a quota at which its owner hears about it."""


class Crossing(NamedTuple):
    counter: Counter
    mark: int
    """``WARNING`` (80) or ``EXHAUSTED`` (100)."""
    used: int
    """Units used in the window after this request (what the store answered)."""


def crossings(plan: Plan, answers: Sequence[CounterAnswer]) -> list[Crossing]:
    """The marks this request's charge reached, per key and tenant quota of the plan; a quota
    that refused the request reports ``EXHAUSTED``. Empty for nearly every request."""
    found: list[Crossing] = []
    passed = True
    for answer in answers:
        if not answer[0]:
            passed = False
            break
    for counter, answer in zip(plan, answers, strict=True):
        if counter[0] != QUOTA or counter[1].startswith("gk:{c:"):
            continue
        limit = counter[3]
        used = limit - answer[1]
        if not answer[0]:
            found.append(Crossing(counter, EXHAUSTED, used))
        elif passed:
            before = used - counter[5]
            for mark in MARKS:
                level = -(-limit * mark // 100)  # the mark in whole units, rounded up
                if before < level <= used:
                    found.append(Crossing(counter, mark, used))
    return found


def scope_of(counter: Counter) -> str:
    """``key`` or ``tenant``: whose budget the counter is (``client`` for a client's)."""
    key = counter[1]
    if key.startswith("gk:{c:"):
        return "client"
    return "tenant" if key[key.index("}") + 2:].startswith("all:") else "key"


def window_of(counter: Counter) -> str:
    """The quota's window as its key names it: ``2026-11-30`` (a UTC day), ``2026-11``."""
    return counter[1].rpartition(":")[2]
