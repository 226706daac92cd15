"""Counters in process memory: the embedded default, for one process (each worker counts
alone: ``--workers 4`` allows four times the limit; shared limits need the Redis store).

Atomic because ``apply_now`` is plain code: on one event loop no other request runs between
the check and the charge. Time is only the ``now`` given.

Each counter is one ``Cell`` (a native object once compiled, so the request path does integer
arithmetic on machine words, not on boxed Python ints). A rate keeps its GCRA ``tat`` as whole
microseconds plus a remainder in ``1/limit`` microseconds: exact as ``gcra.py`` (which keeps
the product), yet small enough for a machine word whatever the limit (the Lua script keeps the
same pair).

Memory is bounded: cells live in a plain dict in insertion order, each with a "used" bit set
on every charge (the CLOCK approximation of least-recently-used). Every 8th write looks at up to
16 cells at the front: an expired one is dropped, a live one goes to the back. Past
``max_counters`` the front cell goes: one used since its last visit gets a second chance
(bit cleared, sent to the back), the first one that was not is forgotten. O(1) amortised.
Forgetting a live counter only ever lets a client through sooner; ``evicted_live`` counts it
so an operator can size the bound.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

from mypy_extensions import mypyc_attr

from gatekeeper.limits.gcra import US, gcra, to_us
from gatekeeper.limits.plan import CONCURRENCY, QUOTA, RATE, Counter, Plan
from gatekeeper.store.counters import Correction, CounterAnswer, EmbeddedCounterStore, Lease
from gatekeeper.store.memory_plan import (
    NO_COSTS,
    QUOTA_RULE,
    RATE_RULE,
    RULE_CODES,
    SLOT_RULE,
    UNIT_INDEX,
    Cell,
    Compiled,
    Costs,
    Rule,
    cost_of,
)

DEFAULT_MAX_COUNTERS = 200_000


@mypyc_attr(allow_interpreted_subclasses=True)  # wrappers that count calls, in tests too
class MemoryCounterStore(EmbeddedCounterStore):
    def __init__(self, max_counters: int = DEFAULT_MAX_COUNTERS) -> None:
        self.max_counters = max_counters
        self.evicted_live = 0
        self._cells: dict[str, Cell] = {}
        self._writes = 0
        self._lease = 0
        """The last slot id given (an int attribute: cheaper than ``next()`` on a counter)."""

    def __len__(self) -> int:
        return len(self._cells)

    def snapshot(self) -> dict[str, tuple[int, int, int, dict[int, int] | None]]:
        """Every cell's state as plain data: two stores that were charged alike are equal in
        it."""
        return {key: cell.plain() for key, cell in self._cells.items()}

    def apply_now(self, plan: Plan, now: float) -> list[CounterAnswer]:
        """The reference path: any plan, every answer in full (refusals, hand-built plans).
        Nothing is written until every counter has answered."""
        now_us = to_us(now)
        cells = self._cells
        staged: dict[str, Cell] = {}
        slots: list[tuple[Cell, int, int]] = []
        answers: list[CounterAnswer] = []
        passed = True
        for kind, key, _, limit, period, cost, _, expires, _, _ in plan:  # slice, ttl: lease
            cell = cells.get(key)
            if cell is not None and cell.expires <= now_us:
                cell = None  # expired: as if never charged
            if kind == RATE:
                period_us = round(period * US)
                tat = 0 if cell is None else cell.value * limit + cell.frac
                g = gcra(tat, now_us, limit, period_us, limit, cost)
                if not g[0]:
                    passed = False
                tat = g[1]
                answers.append(_new(CounterAnswer, (g[0], g[2], g[3], g[4], None)))
                staged[key] = Cell(tat // limit + 1, tat // limit, tat % limit)
            elif kind == CONCURRENCY:
                held: dict[int, int] = {} if cell is None or cell.held is None else cell.held
                if len(held) >= limit:  # only at the limit are expired slots worth a sweep
                    held = {k: v for k, v in held.items() if v > now_us}
                    if len(held) >= limit:
                        passed = False
                        soonest = (min(held.values()) - now_us) / US
                        answers.append(_new(CounterAnswer, (False, 0, soonest,
                                                            min(1.0, soonest), None)))
                        continue
                self._lease += 1
                lease = _new(Lease, (key, self._lease))
                until = now_us + round(period * US)
                answers.append(_new(CounterAnswer, (True, limit - len(held) - 1, 0.0, 0.0,
                                                    lease)))
                # the slot is added only once the whole plan passed
                slot = Cell(until if cell is None or until > cell.expires else cell.expires,
                            0, 0, dict(held))
                staged[key] = slot
                slots.append((slot, lease.id, until))
            elif kind == QUOTA:
                answer, used, end = _quota(period, expires, limit, cost, cell, now_us)
                if not answer[0]:
                    passed = False
                answers.append(answer)
                staged[key] = Cell(end, used)
            else:
                raise ValueError(f"unknown counter kind {kind!r}")
        if not passed:
            return [a._replace(lease=None) if a[4] else a for a in answers]
        if len(staged) != len(plan):
            return self._apply_repeating(plan, now)
        for slot, lease_id, until in slots:
            slot.held[lease_id] = until  # type: ignore[index]  # a slot cell holds a dict
        for key, cell in staged.items():
            added = key not in cells
            cells[key] = cell
            if added:
                self._added(now_us)
        return answers

    def take(self, plan: Compiled, costs: Costs, now: float) -> list[Lease] | None:
        """``apply_now`` of a compiled plan (``compile_plan``) whose every counter allows: the
        same charge, for a fraction of the work (cells changed in place, no plan rebuilt per
        request for its token cost, no answer built). ``costs`` is ``(1, tokens, spend)``,
        what each unit's counters cost this request. Answers the slots taken, and leaves each
        counter's answer in its rule (``left``, ``reset``; ``answers`` builds apply_now's).
        None when a counter refuses: nothing is charged, and ``apply_now`` answers the
        refusal in full (refusals are rare)."""
        now_us = to_us(now)
        cells = self._cells
        # first every counter answers, into its rule's scratch; nothing changes until all
        # of them allowed (no await in here: no other request can use the scratch meanwhile)
        for rule in plan:
            cell = cells.get(rule.key)
            rule.cell = cell  # an expired one is reused, as if never charged
            live = cell is not None and cell.expires > now_us
            code = rule.code
            if code == RATE_RULE:  # gcra() with burst = limit, on (us, frac) pairs
                cost = cost_of(costs, rule.unit)
                limit = rule.limit
                if cell is None or cell.value < now_us:  # expired: value < expires <= now
                    us = now_us
                    frac = 0
                else:
                    us = cell.value
                    frac = cell.frac
                if cost == 1:
                    us += rule.step
                    frac += rule.rem
                else:
                    us += cost * rule.step
                    frac += cost * rule.rem
                if frac >= limit:
                    us += frac // limit
                    frac %= limit
                edge = now_us + rule.period_us
                if us > edge or (us == edge and frac):
                    return None
                rule.new_value = us
                rule.new_frac = frac
            elif code == SLOT_RULE:
                held = cell.held if live and cell is not None else None
                if held is not None and len(held) >= rule.limit:
                    held = {k: v for k, v in held.items() if v > now_us}
                    if len(held) >= rule.limit:
                        return None
                rule.held = held
            else:  # a quota: its window end is in the plan (compile_plan checked)
                if rule.end_us <= now_us:
                    return None  # a plan kept past its window: apply_now says so, loudly
                used = cost_of(costs, rule.unit)
                if live and cell is not None:
                    used += cell.value
                if used > rule.limit:
                    return None
                rule.new_value = used
        # then every counter is charged
        leases: list[Lease] = []
        for rule in plan:
            cell = rule.cell
            code = rule.code
            if code == RATE_RULE:
                us = rule.new_value
                frac = rule.new_frac
                limit = rule.limit
                self._put_tat(rule.key, cell, us, frac, now_us)
                rule.left = ((now_us + rule.period_us - us) * limit - frac) // rule.period_us
                rule.reset = ((us - now_us) * limit + frac) / (limit * US)
            elif code == SLOT_RULE:
                self._lease += 1
                lease = self._lease
                until = now_us + rule.period_us
                held = rule.held
                if held is None:
                    held = {}
                if cell is None:
                    cell = self._add(rule.key, until, 0, 0, now_us)
                else:
                    if until > cell.expires:
                        cell.expires = until
                    cell.used = True
                cell.held = held
                rule.left = rule.limit - len(held) - 1
                rule.reset = 0.0
                held[lease] = until
                leases.append(_new(Lease, (rule.key, lease)))
            else:
                used = rule.new_value
                if cell is None:
                    self._add(rule.key, rule.end_us, used, 0, now_us)
                else:
                    cell.expires = rule.end_us
                    cell.value = used
                    cell.used = True
                rule.left = rule.limit - used
                rule.reset = (rule.end_us - now_us) / US
        return leases

    @staticmethod
    def answers(plan: Compiled, leases: Sequence[Lease]) -> list[CounterAnswer]:
        """What ``apply_now`` would have answered for the plan ``take`` just charged (its
        rules' answers, its slots in plan order): for what reads every answer."""
        taken = iter(leases)
        return [_new(CounterAnswer, (True, r.left, r.reset, 0.0,
                                     next(taken) if r.code == SLOT_RULE else None)) for r in plan]

    def give(self, plan: Compiled, leases: Sequence[Lease], reserved: Costs, actual: Costs,
             now: float) -> int:
        """``settle_now`` for a request charged by ``take``: its slots released, and each
        counter of ``plan`` (its token and spend counters) corrected from what it reserved to
        what the request used (``actual``; ``reserved`` itself when the usage is unknown)."""
        now_us = to_us(now)
        cells = self._cells
        released = 0
        for lease in leases:
            cell = cells.get(lease[0])
            if cell is not None and cell.expires > now_us:
                held = cell.held
                lease_id = lease[1]
                if held is not None and lease_id in held:
                    del held[lease_id]
                    released += 1
        if actual == reserved:  # unknown usage: nothing to correct (compiled, ``is`` boxes both)
            return released
        for rule in plan:
            delta = cost_of(reserved, rule.unit) - cost_of(actual, rule.unit)
            if not delta:
                continue
            cell = cells.get(rule.key)
            if rule.code == RATE_RULE:  # refund(), on (us, frac) pairs
                limit = rule.limit
                if cell is None or cell.value < now_us:  # expired: value < expires <= now
                    us, frac = now_us, 0
                else:
                    us, frac = cell.value, cell.frac
                frac -= delta * rule.rem
                us += frac // limit - delta * rule.step
                frac %= limit
                if us < now_us:
                    us, frac = now_us, 0
                self._put_tat(rule.key, cell, us, frac, now_us)
            elif rule.code == QUOTA_RULE:
                if cell is not None and cell.expires > now_us:
                    used = cell.value - delta
                    cell.value = used if used > 0 else 0
                elif delta < 0 and rule.end_us > now_us:  # evicted: count the extra usage
                    if cell is None:
                        self._add(rule.key, rule.end_us, -delta, 0, now_us)
                    else:
                        cell.expires = rule.end_us
                        cell.value = -delta
        return released

    def _put_tat(self, key: str, cell: Cell | None, us: int, frac: int, now_us: int) -> None:
        """A rate's new tat: it expires once the tat has passed (full again)."""
        if cell is None:
            self._add(key, us + 1, us, frac, now_us)
        else:
            cell.expires = us + 1
            cell.value = us
            cell.frac = frac
            cell.used = True

    def _add(self, key: str, expires: int, value: int, frac: int, now_us: int) -> Cell:
        cell = Cell(expires, value, frac)
        self._cells[key] = cell
        self._added(now_us)
        return cell

    def _added(self, now_us: int) -> None:
        """After a new cell: every 8th, a sweep; past the bound, evictions."""
        self._writes += 1
        if not self._writes & 7 or len(self._cells) > self.max_counters:
            self._sweep(now_us)

    def _apply_repeating(self, plan: Plan, now: float) -> list[CounterAnswer]:
        """A plan naming one key twice (hand-built: policies never do): its counters charged
        one by one, so the second sees the first's charge, and every cell the plan touched
        restored when one refuses (all-or-nothing still)."""
        cells = self._cells
        saved: dict[str, Cell | None] = {}
        for c in plan:  # as they are now: a slot taken later adds to a copy, not to these
            cell = cells.get(c[1])
            saved[c[1]] = None if cell is None else cell.copy()
        answers = [self.apply_now((c,), now)[0] for c in plan]
        if all(a[0] for a in answers):
            return answers
        for key, cell in saved.items():
            if cell is None:
                cells.pop(key, None)
            else:
                cells[key] = cell
        return [a._replace(lease=None) if a[4] else a for a in answers]

    def release_now(self, leases: Sequence[Lease], now: float) -> int:
        return self.settle_now(leases, (), now)

    def reconcile_now(self, counter: Counter, reserved: int, actual: int, now: float) -> None:
        self.settle_now((), ((counter, reserved, actual),), now)

    def settle_now(self, leases: Sequence[Lease], corrections: Sequence[Correction],
                   now: float) -> int:
        """``give`` for counters of a plan that was not compiled: each correction goes
        through it as a plan of one (a quota of an aligned window gets its end now)."""
        released = self.give((), leases, NO_COSTS, NO_COSTS, now)
        now_us = to_us(now)
        for counter, reserved, actual in corrections:
            if reserved == actual or counter.kind not in (RATE, QUOTA):
                continue
            unit = UNIT_INDEX[counter.unit]
            spent = [0, 0, 0]
            spent[unit] = actual
            costs = [0, 0, 0]
            costs[unit] = reserved
            rule = Rule(RULE_CODES[counter.kind], counter.key, counter.limit,
                        round(counter.period * US), unit,
                        _window_end(counter.period, counter.expires, now_us))
            self.give((rule,), (), (costs[0], costs[1], costs[2]),
                      (spent[0], spent[1], spent[2]), now)
        return released

    def peek(self, plan: Plan, now: float) -> list[CounterAnswer]:
        """Each counter's state now, charging nothing and taking no slot: what is left
        (``remaining``) and when it is full again (``reset_after``). For the server to show
        (the CLI cannot reach a server's memory); ``allowed`` says whether ``cost`` fits."""
        now_us = to_us(now)
        out: list[CounterAnswer] = []
        for c in plan:
            cell = self._cells.get(c.key)
            if cell is not None and cell.expires <= now_us:
                cell = None
            if c.kind == RATE:
                limit = c.limit
                allowed, _, remaining, reset, retry = gcra(
                    0 if cell is None else cell.value * limit + cell.frac, now_us, limit,
                    round(c.period * US), limit, c.cost)
                if allowed:  # gcra's answer counts the cost as charged: give it back
                    remaining += c.cost
                    reset = 0.0 if cell is None else max(0.0, (cell.value - now_us) / US)
                out.append(CounterAnswer(allowed, remaining, reset, retry))
            elif c.kind == QUOTA:
                used = 0 if cell is None else cell.value
                reset = max(0.0, (_window_end(c.period, c.expires, now_us) - now_us) / US)
                fits = used + c.cost <= c.limit
                out.append(CounterAnswer(fits, c.limit - used, reset, 0.0 if fits else reset))
            else:
                held = 0 if cell is None or cell.held is None else \
                    sum(1 for v in cell.held.values() if v > now_us)
                out.append(CounterAnswer(held < c.limit, c.limit - held, 0.0, 0.0))
        return out

    def _sweep(self, now_us: int) -> None:
        """Up to 16 cells from the front: expired ones dropped, live ones sent to the back.
        Then, while over the bound, the front cell goes, unless it was used since its last
        visit (a second chance: bit cleared, sent to the back)."""
        cells = self._cells
        for _ in range(min(16, len(cells))):
            key = next(iter(cells))
            cell = cells.pop(key)
            if cell.expires > now_us:
                cells[key] = cell
        while len(cells) > self.max_counters:
            key = next(iter(cells))
            cell = cells.pop(key)
            if cell.expires <= now_us:
                continue
            if cell.used:
                cell.used = False
                cells[key] = cell
            else:
                self.evicted_live += 1


_new: Final = tuple.__new__
def _window_end(period: float, expires: float, now_us: int) -> int:
    """The quota's window end: the plan's (calendar windows), else aligned to its period."""
    if expires:
        return round(expires * US)
    period_us = round(period * US)
    return now_us - now_us % period_us + period_us


def _quota(period: float, expires: float, limit: int, cost: int, cell: Cell | None,
           now_us: int) -> tuple[CounterAnswer, int, int]:
    """The quota's answer, its units used after it, and its window end."""
    end = _window_end(period, expires, now_us)
    if end <= now_us:
        # a plan kept past its window would count into a key that is already gone: every
        # request would pass. Loud instead (a StoreError: the fail rule applies).
        raise ValueError(f"a quota counter applied after its window ended ({expires:.0f}): "
                         "build the plan with the same now as apply")
    used = 0 if cell is None else cell.value
    reset = (end - now_us) / US
    if used + cost > limit:
        retry = math.inf if cost > limit else reset
        return _new(CounterAnswer, (False, limit - used, reset, retry, None)), used, end
    used += cost
    return _new(CounterAnswer, (True, limit - used, reset, 0.0, None)), used, end
