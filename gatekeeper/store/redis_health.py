"""What a Redis server says about itself, judged for gatekeeper: a pure function over ``INFO``.

Key records must survive a restart (counters may not), and an eviction policy must never pick
a record: ``gatekeeper check-config`` prints these findings for a Redis store URL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

SAFE_EVICTION = ("noeviction", "volatile-lru", "volatile-lfu", "volatile-ttl", "volatile-random")
"""Policies that never evict a key without a TTL: every counter has one, no key record does."""


def findings(nodes: Sequence[Mapping[str, Any]]) -> tuple[str, list[str]]:
    """``(summary, warnings)`` from each primary's ``INFO`` (one for a single server)."""
    first = nodes[0]
    mode = f"cluster of {len(nodes)} primaries" if int(first.get("cluster_enabled", 0)) \
        else "one server"
    aof = [bool(int(n.get("aof_enabled", 0))) for n in nodes]
    policies = sorted({str(n.get("maxmemory_policy", "unknown")) for n in nodes})
    summary = (f"Redis {first.get('redis_version', '?')}, {mode}, "
               f"AOF {'on' if all(aof) else 'off' if not any(aof) else 'on some nodes'}, "
               f"maxmemory-policy {', '.join(policies)}")
    warnings: list[str] = []
    if not all(aof):
        warnings.append("appendonly is off: key records written since the last snapshot (if "
                        "any) are lost when Redis is killed or crashes; set appendonly yes, "
                        "appendfsync everysec")
    unsafe = [p for p in policies if p not in SAFE_EVICTION]
    if unsafe:
        warnings.append(f"maxmemory-policy {', '.join(unsafe)} may evict key records; use "
                        "volatile-lru, volatile-ttl or noeviction")
    return summary, warnings
