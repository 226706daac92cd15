"""The apply command packed from cached counter parts is byte for byte the one packed from
``apply_args`` (the reference the cluster path still uses), whatever the costs, with or without
settles riding along, and a counter whose limit changed under the same key is packed afresh.
Pure: no server."""

from __future__ import annotations

import pytest

from gatekeeper.limits.plan import CONCURRENCY, QUOTA, RATE, REQUESTS, TOKENS, Counter, Lease, Plan
from gatekeeper.store.redis_counters import (
    EXACT,
    Part,
    apply_args,
    apply_command,
    apply_packed,
    bulk,
    packed,
)
from gatekeeper.store.redis_settles import SettleQueue, Settles

SHA = "0123456789abcdef0123456789abcdef01234567"
TAG = "{t:acme}"


def plan(tokens: int, limit: int = 100_000) -> Plan:
    return (Counter(RATE, f"gk:{TAG}:k:rq", TAG, 1000, 60.0, 1, REQUESTS),
            Counter(RATE, f"gk:{TAG}:k:tk", TAG, limit, 60.0, tokens, TOKENS),
            Counter(CONCURRENCY, f"gk:{TAG}:k:cc", TAG, 60, 30.0, 1, REQUESTS),
            Counter(QUOTA, f"gk:{TAG}:k:day:2026-11-30", TAG, 10**7, 86_400.0, tokens, TOKENS,
                    1_796_083_200.0))


def reference(p: Plan, now: str | int = "", riding: Settles | None = None) -> bytes:
    keys, specs = apply_args(p)
    if riding is None:
        return packed(SHA, keys, [now, specs])
    return packed(SHA, riding.keys() + keys, [now, specs, *riding.args()])


def command(p: Plan, parts: dict[str, Part], now: str | int = "",
            riding: Settles | None = None) -> bytes:
    keys, specs = apply_packed(p, parts)
    return apply_command(SHA, len(p), keys, bulk(now), specs, riding)


@pytest.mark.parametrize("tokens", [0, 1, 66, 99_999, 100_000, 100_001, 10**7 + 1])
def test_packed_from_parts_equals_the_reference(tokens: int) -> None:
    parts: dict[str, Part] = {}
    for _ in range(2):  # the first fills the parts, the second reuses them
        assert command(plan(tokens), parts) == reference(plan(tokens))
        assert command(plan(tokens), parts, 1_764_460_800_123_456) == \
            reference(plan(tokens), 1_764_460_800_123_456)
    assert len(parts) == 4


def test_costs_changing_on_the_same_parts_are_packed_as_the_reference() -> None:
    parts: dict[str, Part] = {}
    for tokens in (66, 66, 1, 99_999, 66, 0, 0, 100_001):
        assert command(plan(tokens), parts) == reference(plan(tokens))


def test_a_changed_limit_under_the_same_key_is_packed_afresh() -> None:
    parts: dict[str, Part] = {}
    apply_packed(plan(50), parts)
    assert command(plan(50, limit=500), parts) == reference(plan(50, limit=500))


def test_out_of_range_values_are_refused_like_the_reference() -> None:
    for bad in (plan(EXACT), plan(1, limit=EXACT)):
        with pytest.raises(ValueError, match="2\\^52"):
            apply_args(bad)
        with pytest.raises(ValueError, match="2\\^52"):
            apply_packed(bad, {})
    odd = (Counter("leaky", f"gk:{TAG}:x", TAG, 1, 1.0, 1, REQUESTS),)
    with pytest.raises(ValueError, match="unknown counter kind"):
        apply_packed(odd, {})


@pytest.mark.anyio
async def test_settles_riding_along_are_packed_as_the_reference() -> None:
    """Their keys go first (the script settles first), their ids and corrections last; a
    correction with nothing to correct, and a concurrency counter's, are left out."""
    p = plan(66)
    queue = SettleQueue(_never)
    queue.add([Lease(p[2].key, 17), Lease(p[2].key, 18)],
              [(p[1], 66, 12), (p[0], 1, 1), (p[2], 1, 0), (p[3], 66, 70)], None)
    riding = queue.take(p[0].key)
    assert riding is not None and len(riding) == 4
    assert riding.keys() == [p[2].key, p[2].key, p[1].key, p[3].key]
    assert riding.args()[0] == "17 18"
    assert command(p, {}, riding=riding) == reference(p, riding=riding)
    assert command(p, {}, 1_764_460_800_123_456, riding) == \
        reference(p, 1_764_460_800_123_456, riding)
    await queue.drain()  # nothing left: nothing sent


async def _never(settles: Settles) -> None:
    raise AssertionError("nothing is sent")
