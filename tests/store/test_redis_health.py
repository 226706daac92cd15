"""``findings``: what check-config says about a Redis store, from INFO alone (no server)."""

from __future__ import annotations

from gatekeeper.store.redis_health import findings

GOOD = {"redis_version": "7.2.4", "cluster_enabled": 0, "aof_enabled": 1,
        "maxmemory_policy": "volatile-lru"}


def test_a_persistent_server_that_evicts_only_counters_has_no_warnings() -> None:
    summary, warnings = findings([GOOD])
    assert summary == "Redis 7.2.4, one server, AOF on, maxmemory-policy volatile-lru"
    assert warnings == []


def test_no_aof_and_an_allkeys_policy_are_both_named() -> None:
    summary, warnings = findings([GOOD | {"aof_enabled": 0, "maxmemory_policy": "allkeys-lru"}])
    assert "AOF off" in summary
    assert [w.split(" ")[0] for w in warnings] == ["appendonly", "maxmemory-policy"]
    assert "allkeys-lru may evict key records" in warnings[1]


def test_a_cluster_with_one_node_not_persisting_says_so() -> None:
    nodes = [GOOD | {"cluster_enabled": 1}, GOOD | {"cluster_enabled": 1, "aof_enabled": 0}]
    summary, warnings = findings(nodes)
    assert "cluster of 2 primaries, AOF on some nodes" in summary
    assert len(warnings) == 1 and warnings[0].startswith("appendonly is off")
