"""Counters in process memory: the embedded default, for one process (each worker counts
alone: ``--workers 4`` allows four times the limit; shared limits need the Redis store).

Atomic because ``apply_now`` is plain code: on one event loop no other request runs between
the check and the charge. Time is only the ``now`` given. Memory is bounded: entries live in
an ``OrderedDict`` in least-recently-used order; every 8th write drops up to 16 expired
entries from the front and, past ``max_counters``, the least recently used one (O(1)
amortised, ``popitem(last=False)``). Forgetting a live counter only ever lets a client
through sooner; ``evicted_live`` counts it so an operator can size the bound.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from mypy_extensions import mypyc_attr

from gatekeeper.limits.gcra import US, gcra, to_us
from gatekeeper.limits.plan import CONCURRENCY, QUOTA, RATE, REQUESTS, SPEND, TOKENS, Counter, Plan
from gatekeeper.store.counters import Correction, CounterAnswer, EmbeddedCounterStore, Lease

DEFAULT_MAX_COUNTERS = 200_000

Entry = list[Any]
"""``[expires_us, value]``: rate -> tat (int), quota -> used (its key names its window, and it
expires at the window's end), concurrency -> {lease id: expires_us}."""


@mypyc_attr(allow_interpreted_subclasses=True)  # wrappers that count calls, in tests too
class MemoryCounterStore(EmbeddedCounterStore):
    def __init__(self, max_counters: int = DEFAULT_MAX_COUNTERS) -> None:
        self.max_counters = max_counters
        self.evicted_live = 0
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._writes = 0
        self._lease = 0
        """The last slot id given (an int attribute: cheaper than ``next()`` on a counter)."""

    def __len__(self) -> int:
        return len(self._entries)

    def apply_now(self, plan: Plan, now: float) -> list[CounterAnswer]:
        # Runs on every limited request: written flat (gcra() inlined, tuples built with
        # tuple.__new__, nothing written until every counter has answered).
        now_us = round(now * US)  # to_us, inlined
        entries = self._entries
        staged: dict[str, Entry] = {}
        answers: list[CounterAnswer] = []
        passed = True
        for kind, key, _, limit, period, cost, _, expires, _, _ in plan:  # slice, ttl: lease
            entry = entries.get(key)
            if entry is not None and entry[0] <= now_us:
                entry = None  # expired: as if never charged
            if kind == RATE:
                # gcra() with burst = limit (``gcra.py`` is the reference and says why)
                period_us = round(period * US)
                t_now = now_us * limit
                tat = t_now if entry is None or entry[1] < t_now else entry[1]
                allow_at = tat + (cost - limit) * period_us
                if t_now < allow_at:
                    passed = False
                    scale = limit * US
                    left = (limit * period_us - (tat - t_now)) // period_us
                    answers.append(_new(CounterAnswer, (
                        False, left if left > 0 else 0, (tat - t_now) / scale,
                        math.inf if cost > limit else (allow_at - t_now) / scale, None)))
                    continue
                tat += cost * period_us
                answers.append(_new(CounterAnswer, (True, (t_now - allow_at) // period_us,
                                                    (tat - t_now) / (limit * US), 0.0, None)))
                staged[key] = [tat // limit + 1, tat]
            elif kind == CONCURRENCY:
                held: dict[int, int] = {} if entry is None else entry[1]
                if len(held) >= limit:  # only at the limit are expired slots worth a sweep
                    held = {k: v for k, v in held.items() if v > now_us}
                    if len(held) >= limit:
                        passed = False
                        soonest = (min(held.values()) - now_us) / US
                        answers.append(_new(CounterAnswer, (False, 0, soonest,
                                                            min(1.0, soonest), None)))
                        continue
                    entry = [entry[0], held] if entry is not None else None
                self._lease += 1
                lease = _new(Lease, (key, self._lease))
                until = now_us + round(period * US)
                answers.append(_new(CounterAnswer, (True, limit - len(held) - 1, 0.0, 0.0,
                                                    lease)))
                # the slot is added only once the whole plan passed (``_commit``)
                staged[key] = [until if entry is None or until > entry[0] else entry[0], held,
                               lease.id, until]
            elif kind == QUOTA:
                answer, entry = _quota(period, expires, limit, cost, entry, now_us)
                if not answer[0]:
                    passed = False
                answers.append(answer)
                staged[key] = entry
            else:
                raise ValueError(f"unknown counter kind {kind!r}")
        if not passed:
            return [a._replace(lease=None) if a[4] else a for a in answers]
        if len(staged) != len(plan):
            return self._apply_repeating(plan, now)
        move = entries.move_to_end
        for key, entry in staged.items():
            if len(entry) == 4:  # a slot taken: [expires, held, lease id, its expiry]
                entry[1][entry.pop(2)] = entry.pop()
            entries[key] = entry
            move(key)
        self._writes += 1
        if not self._writes & 7 or len(entries) > self.max_counters:
            self._sweep(now_us)
        return answers

    def take(self, plan: Compiled, costs: Costs, now: float) -> list[CounterAnswer] | None:
        """``apply_now`` of a compiled plan (``compile_plan``) whose every counter allows: the
        same answers and the same charge, for about half the work (no plan rebuilt per request
        for its token cost, no rounding, no NamedTuples). ``costs`` is ``(1, tokens, spend)``,
        what each unit's counters cost this request. None when a counter refuses: nothing is
        charged, and ``apply_now`` answers the refusal in full (refusals are rare)."""
        now_us = round(now * US)
        entries = self._entries
        staged: list[Any] = []
        answers: list[Any] = []
        slots: list[Any] | None = None
        for code, key, limit, period_us, unit, end_us in plan:
            entry = entries.get(key)
            if entry is not None and entry[0] <= now_us:
                entry = None  # expired: as if never charged
            if code == _RATE:  # as in apply_now (gcra() with burst = limit)
                cost = costs[unit]
                t_now = now_us * limit
                tat = t_now if entry is None or entry[1] < t_now else entry[1]
                allow_at = tat + (cost - limit) * period_us
                if t_now < allow_at:
                    return None
                tat += cost * period_us
                staged.append((key, entry, tat // limit + 1, tat))
                answers.append((True, (t_now - allow_at) // period_us,
                                (tat - t_now) / (limit * US), 0.0, None))
            elif code == _SLOT:  # taken at commit, once the whole plan passed
                held: dict[int, int] = {} if entry is None else entry[1]
                if len(held) >= limit:
                    held = {k: v for k, v in held.items() if v > now_us}
                    if len(held) >= limit:
                        return None
                if slots is None:
                    slots = []
                slots.append((len(answers), key, entry, now_us + period_us, held,
                              limit - len(held) - 1))
                answers.append(None)
            else:  # a quota: its window end is in the plan (compile_plan checked)
                if end_us <= now_us:
                    return None  # a plan kept past its window: apply_now says so, loudly
                used = costs[unit] if entry is None else entry[1] + costs[unit]
                if used > limit:
                    return None
                staged.append((key, entry, end_us, used))
                answers.append((True, limit - used, (end_us - now_us) / US, 0.0, None))
        move = entries.move_to_end
        for key, entry, expires, value in staged:
            if entry is None:
                entries[key] = [expires, value]
            else:
                entry[0] = expires
                entry[1] = value
            move(key)
        if slots is not None:
            for i, key, entry, until, held, left in slots:
                self._lease += 1
                lease = self._lease
                held[lease] = until
                if entry is None:
                    entries[key] = [until, held]
                else:
                    if until > entry[0]:
                        entry[0] = until
                    entry[1] = held
                move(key)
                answers[i] = (True, left, 0.0, 0.0, _new(Lease, (key, lease)))
        self._writes += 1
        if not self._writes & 7 or len(entries) > self.max_counters:
            self._sweep(now_us)
        return answers

    def give(self, plan: Compiled, leases: Sequence[Lease], reserved: Costs, actual: Costs,
             now: float) -> int:
        """``settle_now`` for a request charged by ``take``: its slots released, and each
        counter of ``plan`` (its token and spend counters) corrected from what it reserved to
        what the request used (``actual``; ``reserved`` itself when the usage is unknown)."""
        now_us = round(now * US)
        entries = self._entries
        released = 0
        for key, lease_id in leases:
            entry = entries.get(key)
            if entry is not None and entry[0] > now_us and \
                    entry[1].pop(lease_id, None) is not None:
                released += 1
        if actual is reserved:
            return released
        for code, key, limit, period_us, unit, end_us in plan:
            delta = reserved[unit] - actual[unit]
            if not delta:
                continue
            entry = entries.get(key)
            if entry is not None and entry[0] <= now_us:
                entry = None
            if code == _RATE:  # refund(), inlined
                t_now = now_us * limit
                tat = t_now if entry is None or entry[1] < t_now else entry[1]
                tat -= delta * period_us
                if tat < t_now:
                    tat = t_now
                if entry is None:
                    entries[key] = [tat // limit + 1, tat]
                else:
                    entry[0] = tat // limit + 1
                    entry[1] = tat
            elif code == _QUOTA:
                if entry is not None:
                    used = entry[1] - delta
                    entry[1] = used if used > 0 else 0
                elif delta < 0 and end_us > now_us:
                    entries[key] = [end_us, -delta]  # evicted: count the extra usage
                else:
                    continue
            else:
                continue
            entries.move_to_end(key)
        if len(entries) > self.max_counters:  # a refund may put back an evicted entry
            self._sweep(now_us)
        return released

    def _apply_repeating(self, plan: Plan, now: float) -> list[CounterAnswer]:
        """A plan naming one key twice (hand-built: policies never do): its counters charged
        one by one, so the second sees the first's charge, and every entry the plan touched
        restored when one refuses (all-or-nothing still)."""
        entries = self._entries
        saved = {c[1]: _copy(entries.get(c[1])) for c in plan}
        answers = [self.apply_now((c,), now)[0] for c in plan]
        if all(a[0] for a in answers):
            return answers
        for key, entry in saved.items():
            if entry is None:
                entries.pop(key, None)
            else:
                entries[key] = entry
        return [a._replace(lease=None) if a[4] else a for a in answers]

    def release_now(self, leases: Sequence[Lease], now: float) -> int:
        return self.settle_now(leases, (), now)

    def reconcile_now(self, counter: Counter, reserved: int, actual: int, now: float) -> None:
        self.settle_now((), ((counter, reserved, actual),), now)

    def settle_now(self, leases: Sequence[Lease], corrections: Sequence[Correction],
                   now: float) -> int:
        """``give`` for counters of a plan that was not compiled: each correction goes
        through it as a plan of one (a quota of an aligned window gets its end now)."""
        released = self.give((), leases, _NONE, _NONE, now)
        now_us = round(now * US)
        for counter, reserved, actual in corrections:
            if reserved == actual or counter.kind not in (RATE, QUOTA):
                continue
            unit = _UNITS[counter.unit]
            spent = [0, 0, 0]
            spent[unit] = actual
            costs = [0, 0, 0]
            costs[unit] = reserved
            self.give(((_CODES[counter.kind], counter.key, counter.limit,
                        round(counter.period * US), unit,
                        _window_end(counter.period, counter.expires, now_us)),),
                      (), tuple(costs), tuple(spent), now)  # type: ignore[arg-type]
        return released

    def peek(self, plan: Plan, now: float) -> list[CounterAnswer]:
        """Each counter's state now, charging nothing and taking no slot: what is left
        (``remaining``) and when it is full again (``reset_after``). For the server to show
        (the CLI cannot reach a server's memory); ``allowed`` says whether ``cost`` fits."""
        now_us = to_us(now)
        out: list[CounterAnswer] = []
        for c in plan:
            entry = self._entries.get(c.key)
            if entry is not None and entry[0] <= now_us:
                entry = None
            if c.kind == RATE:
                limit = c.limit
                allowed, _, remaining, reset, retry = gcra(
                    0 if entry is None else entry[1], now_us, limit, round(c.period * US),
                    limit, c.cost)
                if allowed:  # gcra's answer counts the cost as charged: give it back
                    remaining += c.cost
                    reset = 0.0 if entry is None else max(0.0, (entry[1] // limit - now_us) / US)
                out.append(CounterAnswer(allowed, remaining, reset, retry))
            elif c.kind == QUOTA:
                used = 0 if entry is None else entry[1]
                reset = max(0.0, (_window_end(c.period, c.expires, now_us) - now_us) / US)
                fits = used + c.cost <= c.limit
                out.append(CounterAnswer(fits, c.limit - used, reset, 0.0 if fits else reset))
            else:
                held = 0 if entry is None else sum(1 for v in entry[1].values() if v > now_us)
                out.append(CounterAnswer(held < c.limit, c.limit - held, 0.0, 0.0))
        return out

    def _sweep(self, now_us: int) -> None:
        """Drop up to 16 expired entries from the least recently used end, then the least
        recently used while over the bound. Writers call it every 8th write and whenever over
        the bound: O(1) amortised per write, and the store never keeps more than its bound."""
        entries = self._entries
        for _ in range(min(16, len(entries))):
            oldest = next(iter(entries.values()))
            if oldest[0] > now_us:
                break
            entries.popitem(last=False)
        while len(entries) > self.max_counters:
            if entries.popitem(last=False)[1][0] > now_us:
                self.evicted_live += 1


_new = tuple.__new__
_RATE, _SLOT, _QUOTA = 0, 1, 2
_CODES = {RATE: _RATE, CONCURRENCY: _SLOT, QUOTA: _QUOTA}
UNIT_NAMES = (REQUESTS, TOKENS, SPEND)
"""A compiled counter's unit, by its index in ``Costs``."""
_UNITS = {name: i for i, name in enumerate(UNIT_NAMES)}
Costs = tuple[int, int, int]
"""What one request costs each unit's counters: ``(1, tokens, spend)``."""
_NONE: Costs = (0, 0, 0)
Compiled = tuple[tuple[int, str, int, int, int, int], ...]
"""A plan for ``take``: per counter (kind, storage key, limit, period in us, unit (the index
of its cost in ``Costs``), a quota's window end in us)."""


def compile_plan(plan: Plan) -> Compiled | None:
    """``plan`` for ``take`` and ``give``, once per plan (``Admission`` builds it with the plan);
    None for the plans they leave to ``apply_now``: a key named twice, a request counter that
    costs more than one, a quota without its window end (hand-built plans)."""
    out = []
    for c in plan:
        unit = _UNITS[c.unit]
        if (c.kind == QUOTA and not c.expires) or (unit == 0 and c.cost != 1):
            return None
        out.append((_CODES[c.kind], c.key, c.limit, round(c.period * US), unit,
                    round(c.expires * US)))
    if len({c.key for c in plan}) != len(plan):
        return None
    return tuple(out)


def _copy(entry: Entry | None) -> Entry | None:
    """An entry as it is now: a slot taken later adds to a copy of its slots, not to this."""
    if entry is None:
        return None
    return [entry[0], dict(entry[1]) if isinstance(entry[1], dict) else entry[1]]


def _window_end(period: float, expires: float, now_us: int) -> int:
    """The quota's window end: the plan's (calendar windows), else aligned to its period."""
    if expires:
        return round(expires * US)
    period_us = round(period * US)
    return now_us - now_us % period_us + period_us


def _quota(period: float, expires: float, limit: int, cost: int, entry: Entry | None,
           now_us: int) -> tuple[CounterAnswer, Entry]:
    end = _window_end(period, expires, now_us)
    if end <= now_us:
        # a plan kept past its window would count into a key that is already gone: every
        # request would pass. Loud instead (a StoreError: the fail rule applies).
        raise ValueError(f"a quota counter applied after its window ended ({expires:.0f}): "
                         "build the plan with the same now as apply")
    used = 0 if entry is None else entry[1]
    reset = (end - now_us) / US
    if used + cost > limit:
        retry = float("inf") if cost > limit else reset
        return _new(CounterAnswer, (False, limit - used, reset, retry, None)), [end, used]
    used += cost
    return _new(CounterAnswer, (True, limit - used, reset, 0.0, None)), [end, used]
