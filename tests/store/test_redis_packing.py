"""The apply command packed from cached counter parts is byte for byte the one packed from
``apply_args`` (the reference the cluster path still uses), whatever the costs, and a counter
whose limit changed under the same key is packed afresh. Pure: no server."""

from __future__ import annotations

import pytest

from gatekeeper.limits.plan import CONCURRENCY, QUOTA, RATE, REQUESTS, TOKENS, Counter, Plan
from gatekeeper.store.redis_counters import EXACT, Part, apply_args, apply_packed, bulk, packed

SHA = "0123456789abcdef0123456789abcdef01234567"
TAG = "{t:acme}"


def plan(tokens: int, limit: int = 100_000) -> Plan:
    return (Counter(RATE, f"gk:{TAG}:k:rq", TAG, 1000, 60.0, 1, REQUESTS),
            Counter(RATE, f"gk:{TAG}:k:tk", TAG, limit, 60.0, tokens, TOKENS),
            Counter(CONCURRENCY, f"gk:{TAG}:k:cc", TAG, 60, 30.0, 1, REQUESTS),
            Counter(QUOTA, f"gk:{TAG}:k:day:2026-11-30", TAG, 10**7, 86_400.0, tokens, TOKENS,
                    1_796_083_200.0))


def reference(p: Plan, now: str | int = "") -> bytes:
    keys, specs = apply_args(p)
    return packed(SHA, keys, [now, specs])


@pytest.mark.parametrize("tokens", [0, 1, 66, 99_999, 100_000, 100_001, 10**7 + 1])
def test_packed_from_parts_equals_the_reference(tokens: int) -> None:
    parts: dict[str, Part] = {}
    for _ in range(2):  # the first fills the parts, the second reuses them
        head, tail = apply_packed(SHA, plan(tokens), parts)
        assert head + bulk("") + tail == reference(plan(tokens))
        assert head + bulk(1_764_460_800_123_456) + tail == \
            reference(plan(tokens), 1_764_460_800_123_456)
    assert len(parts) == 4


def test_a_changed_limit_under_the_same_key_is_packed_afresh() -> None:
    parts: dict[str, Part] = {}
    apply_packed(SHA, plan(50), parts)
    head, tail = apply_packed(SHA, plan(50, limit=500), parts)
    assert head + bulk("") + tail == reference(plan(50, limit=500))


def test_out_of_range_values_are_refused_like_the_reference() -> None:
    for bad in (plan(EXACT), plan(1, limit=EXACT)):
        with pytest.raises(ValueError, match="2\\^52"):
            apply_args(bad)
        with pytest.raises(ValueError, match="2\\^52"):
            apply_packed(SHA, bad, {})
    odd = (Counter("leaky", f"gk:{TAG}:x", TAG, 1, 1.0, 1, REQUESTS),)
    with pytest.raises(ValueError, match="unknown counter kind"):
        apply_packed(SHA, odd, {})
