"""The plan: which counters a request charges, under which storage keys and hash tags."""

from __future__ import annotations

from gatekeeper.limits.plan import (
    CONCURRENCY,
    EMPTY_PLAN,
    QUOTA,
    RATE,
    TOKENS,
    build_plan,
    client_part,
    credential_part,
)
from gatekeeper.networks import IPAddr, parse_ip
from gatekeeper.policy.limits import NO_LIMITS, LimitSet, Rate, TenantLimits

NOW = 1_796_083_199.0
"""2026-11-30T23:59:59Z: the last second of a UTC day and month."""
FULL = TenantLimits(
    per_key=LimitSet(requests=Rate(60, 60.0), tokens=Rate(90_000, 60.0), concurrency=4,
                     daily_tokens=2_000_000),
    per_tenant=LimitSet(requests=Rate(600, 60.0)),
    per_client=LimitSet(requests=Rate(20, 1.0)))


def addr(text: str) -> IPAddr:
    found = parse_ip(text)
    assert found is not None
    return found


def test_no_limits_is_the_empty_plan() -> None:
    assert build_plan("acme", credential_part("api_key", "3fA9kQ2LmZ8x"), addr("192.0.2.1"),
                      NO_LIMITS, 500) is EMPTY_PLAN


def test_a_tenant_and_its_keys_share_one_hash_tag() -> None:
    plan = build_plan("acme", credential_part("api_key", "3fA9kQ2LmZ8x"), addr("192.0.2.1"),
                      FULL, 500, now=NOW)
    ours = [c for c in plan if c.tag == "{t:acme}"]
    assert [(c.kind, c.unit) for c in ours] == [
        (RATE, "requests"), (RATE, TOKENS), (QUOTA, TOKENS), (CONCURRENCY, "requests"),
        (RATE, "requests")]
    assert all(c.key.startswith("gk:{t:acme}:") for c in ours)
    assert ours[0].key == "gk:{t:acme}:k3fA9kQ2LmZ8x:rq:60/60"
    assert ours[-1].key == "gk:{t:acme}:all:rq:600/60"
    assert ours[2].key == "gk:{t:acme}:k3fA9kQ2LmZ8x:dt:2026-11-30"
    assert [c.cost for c in ours] == [1, 500, 500, 1, 1]
    assert ours[3].period == FULL.lease
    [client] = [c for c in plan if c.tag != "{t:acme}"]
    assert client.tag == "{c:192.0.2.1}" and client.key == "gk:{c:192.0.2.1}:rq:20/1"
    assert len({c.key for c in plan}) == len(plan)


def test_two_keys_of_a_tenant_have_their_own_counters_but_one_tenant_counter() -> None:
    one = build_plan("acme", credential_part("api_key", "AAAAAAAAAAAA"), None, FULL, now=NOW)
    two = build_plan("acme", credential_part("api_key", "BBBBBBBBBBBB"), None, FULL, now=NOW)
    assert one[0].key != two[0].key
    assert one[-1].key == two[-1].key == "gk:{t:acme}:all:rq:600/60"


def test_jwt_subjects_are_hashed_never_embedded() -> None:
    principal = "jwt:corp:alice@example.com"
    part = credential_part("jwt", principal)
    assert part.startswith("j") and len(part) == 25
    assert part == credential_part("jwt", principal)
    assert part != credential_part("jwt", "jwt:corp:bob@example.com")
    plan = build_plan("acme", part, None, FULL, now=NOW)
    assert all("alice" not in c.key and "example" not in c.key for c in plan)


def test_ipv6_clients_are_grouped_by_their_64() -> None:
    same = client_part(addr("2001:db8:1:2::1")), client_part(addr("2001:db8:1:2:ffff::9"))
    assert same[0] == same[1] == "2001:db8:1:2::/64"
    assert client_part(addr("2001:db8:1:3::1")) != same[0]
    assert client_part(addr("203.0.113.7")) == "203.0.113.7"
    assert client_part(addr("::ffff:203.0.113.7")) == "203.0.113.7"  # mapped IPv4 is IPv4
    plan = build_plan("acme", "kX", addr("2001:db8:1:2::1"), FULL, now=NOW)
    assert plan[-1].tag == "{c:2001:db8:1:2::/64}"


def test_an_unknown_client_address_skips_the_per_client_scope() -> None:
    plan = build_plan("acme", "kX", None, FULL, now=NOW)
    assert all(c.tag == "{t:acme}" for c in plan)


def test_every_limits_module_imports_first_in_a_fresh_interpreter() -> None:
    """The store's counter capability and the engine import each other's data: no cycle."""
    import subprocess
    import sys
    for module in ("gatekeeper.store.counters", "gatekeeper.store.memory_counters",
                   "gatekeeper.limits.answer", "gatekeeper.limits.plan",
                   "gatekeeper.limits.windows", "gatekeeper.limits.overrides",
                   "gatekeeper.limits.spend", "gatekeeper.policy.prices",
                   "gatekeeper.policy.limits"):
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
