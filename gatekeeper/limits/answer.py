"""From the store's answers to the request's outcome: allowed or the reason, and headers.

Pure, so replay and tests can decide from recorded answers. Headers are OpenAI's, taken from
this request's own answers (never a second store read): the ``-requests`` and ``-tokens`` trios
come from the tightest rate counter of each unit (fewest remaining), so a client backing off on
them backs off enough. A refusal adds ``retry-after`` (whole seconds, rounded up) and
``retry-after-ms`` for the longest wait among the refusing counters, since the request needs
all of them; a cost that can never pass (larger than its whole limit) gets neither.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from math import ceil
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from gatekeeper import reasons
from gatekeeper.limits.plan import (
    CONCURRENCY,
    QUOTA,
    RATE,
    REQUESTS,
    TOKENS,
    Counter,
    CounterAnswer,
    Lease,
    Plan,
)
from gatekeeper.reasons import Reason

if TYPE_CHECKING:
    from gatekeeper.store.memory_plan import Compiled

Headers = tuple[tuple[bytes, bytes], ...]


class LimitOutcome(NamedTuple):
    allowed: bool
    reason: Reason
    """``OK`` or the refusing counter's reason."""
    refused: Counter | None
    """The counter that decided the refusal (the longest wait): what the audit line names."""
    retry_after: float
    """Seconds; 0 when allowed, inf when the request can never pass."""
    headers: Headers
    leases: tuple[Lease, ...] = ()
    """Concurrency slots taken: released by the request's settle."""


def reason_for(counter: Counter) -> Reason:
    if counter.kind == QUOTA:
        return reasons.QUOTA_EXCEEDED
    if counter.kind == CONCURRENCY:
        return reasons.CONCURRENCY_LIMITED
    return reasons.RATE_LIMITED if counter.unit == REQUESTS else reasons.TOKENS_LIMITED


def outcome(plan: Plan, answers: Sequence[CounterAnswer]) -> LimitOutcome:
    refused: Counter | None = None
    wait = 0.0
    leases: list[Lease] = []
    requests = tokens = None  # the tightest rate answer of each unit: (counter, answer)
    for counter, answer in zip(plan, answers, strict=True):
        if not answer[0] and (refused is None or answer[3] > wait):
            refused, wait = counter, answer[3]
        if answer[4] is not None:
            leases.append(answer[4])
        if counter[0] == RATE:  # the headers speak of rates only: a quota is not a rate
            if counter[6] == REQUESTS:
                if requests is None or answer[1] < requests[1][1]:
                    requests = (counter, answer)
            elif counter[6] == TOKENS and (tokens is None or answer[1] < tokens[1][1]):
                tokens = (counter, answer)
    headers: tuple[tuple[bytes, bytes], ...] = ()
    if requests is not None:
        headers = _trio(_REQUEST_NAMES, *requests)
    if tokens is not None:
        headers += _trio(_TOKEN_NAMES, *tokens)
    if refused is None:
        return _new(LimitOutcome, (True, reasons.OK, None, 0.0, headers, tuple(leases)))
    if wait != math.inf:
        headers += ((b"retry-after", str(max(1, math.ceil(wait))).encode()),
                    (b"retry-after-ms", str(max(1, math.ceil(wait * 1000))).encode()))
    return LimitOutcome(False, reason_for(refused), refused, wait, headers)


_REQUEST_NAMES: Final = (b"x-ratelimit-limit-requests", b"x-ratelimit-remaining-requests",
                         b"x-ratelimit-reset-requests")
_TOKEN_NAMES: Final = (b"x-ratelimit-limit-tokens", b"x-ratelimit-remaining-tokens",
                       b"x-ratelimit-reset-tokens")
_new: Final = tuple.__new__
_MS: Final = (*(b"%dms" % ms for ms in range(1000)), b"1s")
"""``duration``'s text for 0 to 1000 ms (1000: what 999.5 ms rounds up to, 1s)."""


def _trio(names: tuple[bytes, bytes, bytes], counter: Counter,
          answer: CounterAnswer) -> tuple[tuple[bytes, bytes], ...]:
    remaining = answer[1]
    return ((names[0], b"%d" % counter[3]), (names[1], b"%d" % (remaining if remaining > 0
                                                                 else 0)),
            (names[2], duration(answer[2])))


def duration(seconds: float) -> bytes:
    """OpenAI's (Go's) duration text: ``20ms``, ``1.5s``, ``6m0s``, ``1h2m3s``; rounded up.
    Under a second (most resets) the text is looked up and the ceiling taken without
    ``math.ceil``: compiled, either is a call into Python, twice per limited response."""
    if seconds <= 0:
        return b"0s"
    x = seconds * 1000
    if x < 1000:
        ms = int(x)
        return _MS[ms + 1 if ms < x else ms]
    ms = math.ceil(x)
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if hours or minutes else "")
    return f"{text}{secs}s".encode()


class Report:
    """What an allowed plan's answers say, compiled once with the plan (``Admission``): which
    answers fill the rate-limit headers (per unit, the rate counter with the fewest left, as
    ``outcome`` chooses) and which hold slots, so an allowed request pays for none of
    ``outcome``'s loops. Refusals go through ``outcome``."""

    __slots__ = ("names", "rates", "slots")

    def __init__(self, plan: Plan) -> None:
        # the limit header typed Any: to the compiler a tuple[bytes, bytes] is a C struct,
        # boxed into a new tuple at every append (twice per allowed request)
        rates: list[tuple[tuple[tuple[int, Any], ...], bytes, bytes]] = []
        for unit, names in ((REQUESTS, _REQUEST_NAMES), (TOKENS, _TOKEN_NAMES)):
            members = tuple((i, (names[0], b"%d" % c.limit)) for i, c in enumerate(plan)
                            if c.kind == RATE and c.unit == unit)
            if members:
                rates.append((members, names[1], names[2]))
        self.rates = tuple(rates)
        """Per unit with a rate (requests first): its rate counters in plan order (index,
        limit header), the remaining and reset header names."""
        self.slots = tuple(i for i, c in enumerate(plan) if c.kind == CONCURRENCY)
        self.names = frozenset(name for members, remaining, reset in rates
                               for name in (remaining, members[0][1][0], reset))
        """The names of the headers an allowed answer of this plan gets (``outcome``'s too)."""

    def allowed(self, answers: Sequence[CounterAnswer]) -> tuple[Headers, tuple[Lease, ...]]:
        """Headers and slots of a plan every counter allowed (the caller checked)."""
        headers: list[tuple[bytes, bytes]] = []
        for members, remaining, reset in self.rates:
            first = members[0]
            limit = first[1]
            answer = answers[first[0]]
            left = answer[1]
            for k in range(1, len(members)):  # a key's and its tenant's: the tighter speaks
                other = members[k]
                candidate = answers[other[0]]
                if candidate[1] < left:
                    answer, left, limit = candidate, candidate[1], other[1]
            _add_rate(headers, limit, remaining, left, reset, answer[2])
        slots = self.slots
        if not slots:
            return tuple(headers), ()
        if len(slots) == 1:  # a comprehension is a call: the usual one slot, without it
            return tuple(headers), (answers[slots[0]][4],)  # type: ignore[return-value]
        return tuple(headers), tuple([answers[i][4] for i in slots])  # type: ignore[misc]


    def headers_of(self, plan: Compiled) -> Headers:
        """``allowed``'s headers from the rules of a plan the memory store's ``take`` just
        charged (each rule holds its answer): the same headers, no answer built."""
        headers: list[tuple[bytes, bytes]] = []
        for members, remaining, reset in self.rates:
            first = members[0]
            limit = first[1]
            rule = plan[first[0]]
            left = rule.left
            for k in range(1, len(members)):  # a key's and its tenant's: the tighter speaks
                other = members[k]
                candidate = plan[other[0]]
                if candidate.left < left:
                    rule, left, limit = candidate, candidate.left, other[1]
            _add_rate(headers, limit, remaining, left, reset, rule.reset)
        return tuple(headers)


def _add_rate(headers: list[tuple[bytes, bytes]], limit: Any, remaining: bytes,
              left: int, reset: bytes, seconds: float) -> None:
    """One unit's trio of an allowed answer: the limit header, what is left, the reset."""
    ms = ceil(seconds * 1000)  # duration(), its usual case inlined
    headers.append(limit)
    headers.append((remaining, b"%d" % (left if left > 0 else 0)))
    headers.append((reset, _MILLISECONDS[ms] if 0 < ms < 1000 else duration(seconds)))


_MILLISECONDS: Final = (b"0s", *(b"%dms" % ms for ms in range(1, 1000)))
"""``duration`` of 1 to 999 ms, ready: a reset under a second is the common case."""
