"""What the counter scripts are sent and what their replies mean: pure functions, no I/O.

The scripts keep GCRA's ``tat`` in two parts, whole microseconds and a remainder below the
limit, because a Lua number is a double (exact up to 2^53) and ``tat`` in units of
``1/limit`` us is not; the products a step needs (``cost * period_us / limit``) are computed
here, exactly, with Python integers. The answers are then computed from the state each
script read as ``limits/gcra.py`` computes them (a rate's counted from now: ``rate_answer``,
tested equal to ``gcra``), so both backends answer alike to the microsecond.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from struct import Struct
from typing import TYPE_CHECKING, Any

from gatekeeper.limits.gcra import US, to_us
from gatekeeper.limits.plan import CONCURRENCY, QUOTA, RATE, Counter, CounterAnswer, Lease, Plan

if TYPE_CHECKING:
    from gatekeeper.store.redis_settles import Settles

EXACT = 2**52
"""Limits and costs stay below, so that the script's sums of two of them (a remainder plus a
remainder) stay below 2^53, the integers a Lua number holds exactly."""
FAR_US = 2**50
"""A rate charged this far ahead (about 35 years) is as good as closed: larger debts are capped
so the script's arithmetic stays exact."""
_KIND = {RATE: 1, QUOTA: 2, CONCURRENCY: 3}
"""A counter's kind as the scripts read it (``prelude.lua``: RATE, QUOTA, SLOTS)."""
_CORRECTED = {RATE: 1, QUOTA: 2}
SPEC = Struct("<7d")
"""A counter's or a correction's 7 values as the scripts read them: little-endian doubles,
unpacked by Redis's ``struct`` library in one call (parsing the same values from text costs
the server several microseconds per counter). Every value is a whole number below 2^53, which a
double holds exactly, as a Lua number does."""
_HEAD, _COST, _ENDS = Struct("<3d"), Struct("<3d"), Struct("<d")
RATE_VALUE = Struct("<3d")
"""A rate counter's value in Redis: tat_us, tat_rem and the key's own expiry (us), written by
the scripts as three doubles (no text to match or format on the server)."""


SLOTS_HEAD, LEASE = Struct("<3d"), Struct("<2d")
"""A concurrency counter's value in Redis: the last lease id handed out, a time no lease expires
before and the key's own expiry (us), then each lease held as its id and expiry (us), all
doubles: one string the scripts read with the rest in one MGET and write in one SET."""


def slots_state(raw: bytes) -> tuple[int, int, int, list[tuple[int, int]]]:
    """The last id, the soonest-expiry bound, the key's expiry and the leases (id, expiry) of a
    concurrency counter's value (``SLOTS_HEAD``), for tools and tests that read one."""
    if len(raw) < SLOTS_HEAD.size or (len(raw) - SLOTS_HEAD.size) % LEASE.size:
        raise ValueError("not a concurrency counter's value (SLOTS_HEAD, then LEASE each)")
    last, soon, ends = (int(v) for v in SLOTS_HEAD.unpack_from(raw))
    leases = [(int(i), int(e)) for i, e in LEASE.iter_unpack(raw[SLOTS_HEAD.size:])]
    return last, soon, ends, leases


def rate_state(raw: bytes) -> tuple[int, int]:
    """tat_us and tat_rem from a rate counter's value, as the scripts write it or (text
    ``'tat_us tat_rem'``) as older ones did, which they still read."""
    if len(raw) == RATE_VALUE.size and not raw[7:8].isdigit() and raw[7:8] != b" ":
        tat_us, tat_rem, _ = RATE_VALUE.unpack(raw)
        return int(tat_us), int(tat_rem)
    tat, rem = raw.split()
    return int(tat), int(rem)


def apply_args(plan: Plan) -> tuple[list[str], bytes]:
    """KEYS of ``apply.lua`` and its ARGV[2], every counter's values packed in one string
    (``SPEC`` each; ARGV[1] is the time: ``now_arg``)."""
    keys: list[str] = []
    specs: list[bytes] = []
    for c in plan:
        kind = _KIND.get(c.kind)
        if kind is None:
            raise ValueError(f"unknown counter kind {c.kind!r}")
        if not 0 < c.limit < EXACT or not 0 <= c.cost < EXACT:
            raise ValueError(f"counter {c.key}: limit and cost must be below 2^52")
        period_us = round(c.period * US)
        add_us, add_rem = divmod(c.cost * period_us, c.limit) if c.cost <= c.limit else (-1, 0)
        keys.append(c.key)
        specs.append(SPEC.pack(kind, c.limit, period_us, c.cost, add_us, add_rem,
                               round(c.expires * US)))
    return keys, b"".join(specs)


class Part:
    """One counter's fixed part of the apply command, kept by key: what it was made from
    (kind, limit, period, expires), its key packed, its values up to the cost, its period in
    us, its window's end; and its last cost with that cost's values (most costs repeat)."""

    __slots__ = ("cost", "ends", "head", "key", "made_from", "period_us", "spec")

    def __init__(self, c: Counter) -> None:
        kind = _KIND.get(c.kind)
        if kind is None:
            raise ValueError(f"unknown counter kind {c.kind!r}")
        if not 0 < c.limit < EXACT:
            raise ValueError(f"counter {c.key}: limit and cost must be below 2^52")
        self.made_from = (c.kind, c.limit, c.period, c.expires)
        self.key = bulk(c.key)
        self.period_us = round(c.period * US)
        self.head = _HEAD.pack(kind, c.limit, self.period_us)
        self.ends = _ENDS.pack(round(c.expires * US))
        self.cost = -1
        self.spec = b""


PARTS_KEPT = 65_536


def apply_packed(plan: Plan, parts: dict[str, Part]) -> tuple[bytes, bytes]:
    """``apply.lua``'s plan keys and its ARGV[2], packed (``apply_command`` puts them in one
    command: the same bytes as ``packed`` over ``apply_args``), with each counter's fixed part
    taken from ``parts`` (filled here): a priced plan, new each request, then formats only the
    costs that changed."""
    keys: list[bytes] = []
    specs: list[bytes] = []
    for c in plan:
        part = parts.get(c[1])
        if part is None or part.made_from != (c[0], c[3], c[4], c[7]):
            if len(parts) >= PARTS_KEPT:
                parts.clear()
            part = parts[c[1]] = Part(c)
        cost = c[5]
        if cost != part.cost:
            if not 0 <= cost < EXACT:
                raise ValueError(f"counter {c.key}: limit and cost must be below 2^52")
            limit = c[3]
            add_us, add_rem = divmod(cost * part.period_us, limit) if cost <= limit else (-1, 0)
            part.spec = part.head + _COST.pack(cost, add_us, add_rem) + part.ends
            part.cost = cost
        keys.append(part.key)
        specs.append(part.spec)
    return b"".join(keys), bulk(b"".join(specs))


def apply_command(sha: str, n: int, keys: bytes, now: bytes, specs: bytes,
                  riding: Settles | None = None) -> bytes:
    """The whole ``apply.lua`` command: ``n`` plan keys packed, ARGV[1] and ARGV[2] packed,
    and the settles riding along (their keys first, their two arguments last)."""
    if riding is None:
        return b"*%d\r\n$7\r\nEVALSHA\r\n" % (5 + n) + bulk(sha) + bulk(n) + keys + now + \
            specs
    settled = riding.keys()
    n += len(settled)
    ids, corrections = riding.args()
    parts = [b"*%d\r\n$7\r\nEVALSHA\r\n" % (7 + n), bulk(sha), bulk(n)]
    for key in settled:
        parts.append(bulk_key(key))
    parts += (keys, now, specs, bulk(ids), bulk(corrections))
    return b"".join(parts)


def now_arg(now_us: int | None) -> str | int:
    """ARGV[1] of every script: the caller's time, or '' for the server's (``TIME``)."""
    return "" if now_us is None else now_us


_REPLIES: dict[int, Struct] = {}


def reply_numbers(reply: bytes) -> tuple[int, ...]:
    """``apply.lua``'s reply: whole numbers as little-endian 8-byte integers, one string."""
    size = len(reply)
    unpack = _REPLIES.get(size)
    if unpack is None:
        if size % 8:
            raise ValueError(f"an apply reply is 8-byte integers, not {size} bytes")
        unpack = _REPLIES[size] = Struct(f"<{size // 8}q")
    return unpack.unpack(reply)


def answers(plan: Plan, packed: bytes) -> list[CounterAnswer]:
    """One answer per counter from ``apply.lua``'s reply (leases only when the plan passed).
    Fields by index: this runs for every counter of every request."""
    reply = reply_numbers(packed)
    if len(reply) != 2 + 3 * len(plan):
        raise ValueError(f"an apply reply for {len(plan)} counters has {len(reply)} numbers")
    now_us, passed = reply[0], reply[1]
    out: list[CounterAnswer] = []
    i = 2
    for c in plan:
        kind = c[0]
        if kind == RATE:
            out.append(rate_answer(reply[i + 1], reply[i + 2], now_us, c[3], to_us(c[4]),
                                   c[5]))
        elif kind == QUOTA:
            out.append(quota_answer(c, reply[i + 1], now_us))
        elif reply[i]:
            lease = _new(Lease, (c[1], reply[i + 2])) if passed else None
            out.append(_new(CounterAnswer, (True, c[3] - reply[i + 1] - 1, 0.0, 0.0, lease)))
        else:
            soonest = (reply[i + 2] - now_us) / US
            out.append(_new(CounterAnswer, (False, 0, soonest, min(1.0, soonest), None)))
        i += 3
    return out


_new = tuple.__new__


def rate_answer(tat_us: int, tat_rem: int, now_us: int, limit: int, period_us: int,
                cost: int) -> CounterAnswer:
    """``gcra``'s answer (burst = limit) from the tat the script read, ``tat_us`` whole us
    and ``tat_rem`` in 1/limit us, counted from now: the same numbers, but machine words where
    ``gcra``'s absolute tat in 1/limit us is a big integer (now in us times the limit)."""
    ahead = tat_us - now_us
    before = ahead * limit + tat_rem if ahead >= 0 else 0  # tat - now, in 1/limit us
    after = before + cost * period_us
    tau = limit * period_us
    scale = limit * US
    if after > tau:
        retry = math.inf if cost > limit else (after - tau) / scale
        return _new(CounterAnswer, (False, max(0, (tau - before) // period_us), before / scale,
                                    retry, None))
    return _new(CounterAnswer, (True, (tau - after) // period_us, after / scale, 0.0, None))


def quota_answer(c: Counter, used: int, now_us: int) -> CounterAnswer:
    """A quota's answer from the units used before this charge."""
    reset = (round(c.expires * US) - now_us) / US if c.expires else \
        (round(c.period * US) - now_us % round(c.period * US)) / US
    if used + c.cost > c.limit:
        return CounterAnswer(False, c.limit - used, reset,
                             float("inf") if c.cost > c.limit else reset)
    return CounterAnswer(True, c.limit - used - c.cost, reset, 0.0)


def reconcile_args(counter: Counter, reserved: int, actual: int,
                   now_us: int | None) -> list[Any] | None:
    """ARGV of ``reconcile.lua``: ``correction_spec``'s 7 values one by one (whole numbers
    below 2^53, exact in the doubles packed); None when there is nothing to do."""
    spec = correction_spec(counter, reserved, actual)
    return None if spec is None else [now_arg(now_us), *(int(v) for v in SPEC.unpack(spec))]


def correction_spec(counter: Counter, reserved: int, actual: int) -> bytes | None:
    """One correction's 7 values as ``counters.lua`` reads them (step 3: kind, limit, delta,
    delta_us, delta_rem, ends_us, period_us), packed (``SPEC``; on every settled request's
    path); None when there is nothing to correct (a concurrency slot, or the usage was the
    reservation)."""
    kind = _CORRECTED.get(counter[0])
    delta = actual - reserved
    if kind is None or not delta:
        return None
    limit = counter[3]
    period_us = to_us(counter[4])
    units = (delta if delta > 0 else -delta) * period_us
    d_us, d_rem = units // limit, units % limit
    if d_us >= FAR_US:
        d_us, d_rem = FAR_US, 0
    return SPEC.pack(kind, limit, delta, d_us, d_rem, to_us(counter[7]), period_us)


def settle_args(leases: Sequence[Lease], corrections: Sequence[tuple[Counter, int, int]],
                now_us: int | None) -> tuple[list[str], list[Any]] | None:
    """KEYS and ARGV of ``settle.lua`` (the lease ids in one string, every correction's
    values in another); None when there is nothing to do."""
    keys = [lease.key for lease in leases]
    specs: list[bytes] = []
    for counter, reserved, actual in corrections:
        spec = correction_spec(counter, reserved, actual)
        if spec is not None:
            keys.append(counter.key)
            specs.append(spec)
    if not keys:
        return None
    return keys, [now_arg(now_us), " ".join(str(lease.id) for lease in leases),
                  b"".join(specs)]


def release_args(leases: Sequence[Lease], now_us: int | None) -> tuple[list[str], list[Any]]:
    return [lease.key for lease in leases], [now_arg(now_us), *(lease.id for lease in leases)]


def packed(sha: str, keys: Sequence[str], args: Sequence[str | int | bytes]) -> bytes:
    """One EVALSHA in Redis's wire format (RESP), as ``ScriptLane.call`` sends it."""
    return packed_head(sha, keys, len(args)) + b"".join(bulk(a) for a in args)


def packed_command(*args: str) -> bytes:
    """Any command in the wire format."""
    return b"*%d\r\n" % len(args) + b"".join(bulk(a) for a in args)


def packed_head(sha: str, keys: Sequence[str], arg_count: int) -> bytes:
    """An EVALSHA's wire format up to its first argument (ARGV[1])."""
    return b"*%d\r\n$7\r\nEVALSHA\r\n" % (3 + len(keys) + arg_count) + bulk(sha) + \
        bulk(len(keys)) + b"".join(bulk(key) for key in keys)


_KEYS: dict[str, bytes] = {}
"""Keys in the wire format, by key: the same few settle with every request."""


def bulk_key(key: str) -> bytes:
    """``bulk(key)``, remembered (up to ``PARTS_KEPT`` keys)."""
    found = _KEYS.get(key)
    if found is None:
        if len(_KEYS) >= PARTS_KEPT:
            _KEYS.clear()
        found = _KEYS[key] = bulk(key)
    return found


def bulk(value: str | int | bytes) -> bytes:
    """One argument in the wire format."""
    if isinstance(value, str):
        data = value.encode()
    elif isinstance(value, int):
        data = b"%d" % value
    else:
        data = value
    return b"$%d\r\n%s\r\n" % (len(data), data)
