"""The Redis store on Redis Cluster: ``redis+cluster://[user:password@]host:port,host:port``
(``rediss+cluster://`` for TLS), any primaries as seeds.

Key records share one hash tag (``{keys}``), so they behave exactly as on one server. A
response's end is queued by hash tag and rides with the next apply to that tag (or goes out
from the store's timer, one call per tag: ``redis_settles``). A plan's
counters are grouped by their hash tag (``limits/plan.py`` chose the tags: a credential's and
its tenant's counters share ``{t:<tenant>}``, a client address has ``{c:<address>}``), each
group is one EVALSHA on the node that owns its slot, and the groups go out concurrently. A
plan whose groups disagree (one allows, another refuses) gives back what the allowing groups
charged (their slots released, their costs reconciled to zero), so across slots a plan is
all-or-nothing up to that refund; within one slot it is exactly so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ClusterDownError, ConnectionError, SlotNotCoveredError

from gatekeeper.errors import StoreError
from gatekeeper.keys import KeyRecord
from gatekeeper.limits.plan import CONCURRENCY, CounterAnswer, Lease, Plan
from gatekeeper.store.counters import Correction, _cause
from gatekeeper.store.redis import (
    _FAILURES,
    CONNECT_TIMEOUT,
    SOCKET_TIMEOUT,
    RedisStore,
    settle_delay_option,
)
from gatekeeper.store.redis_scripts import LuaScript
from gatekeeper.store.signals import Counts, KeySignals

IN_FLIGHT = 64
"""Commands in flight at once from one store: redis-py's cluster pools do not wait for a free
connection (they raise), so the store waits instead, and each node's pool has room for all."""
_OPTIONS = {"socket_timeout": float, "socket_connect_timeout": float, "max_connections": int}
_AGAIN = (ConnectionError, ClusterDownError, SlotNotCoveredError)
"""What a failover leaves behind for one command: a pooled connection to the old primary, or
a node that has not yet heard of the promotion. Exact types: never a timeout (a hung node
would cost two), nor a full pool."""


_READS = frozenset({"GET", "MGET", "HGET", "ZRANGE", "INFO"})
"""The store's commands that change nothing: tried twice more after a failover's error, where
a write is tried once more (a script run twice may count twice; a read run twice costs a round
trip). After a failover redis-py may close every connection of the client more than once (on
every fifth MOVED, on a slot map read again), failing a retried command too."""


class _Cluster(RedisCluster):
    """redis-py's cluster client with one more try after a failover's error (two for a read),
    on the slot map that error made it read again. redis-py's own retries stay off: they would
    retry timeouts too, and a pipeline's retry closes every connection of the client, failing
    the commands in flight."""

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        left = 2 if args and args[0] in _READS else 1
        while True:
            try:
                return await super().execute_command(*args, **kwargs)
            except _AGAIN as exc:
                if not left or type(exc) not in _AGAIN:
                    raise
                left -= 1


class RedisClusterStore(RedisStore):
    def __init__(self, url: str, *, server_time: bool = True,
                 socket_timeout: float = SOCKET_TIMEOUT,
                 connect_timeout: float = CONNECT_TIMEOUT) -> None:
        url, delay = settle_delay_option(url)
        super().__init__(url, server_time=server_time,
                         client=cluster_client(url, socket_timeout, connect_timeout),
                         settle_delay=delay, tag=_tag)
        self._in_flight = asyncio.Semaphore(IN_FLIGHT)
        self._ready = False
        self._ready_lock = asyncio.Lock()

    async def _start(self) -> None:
        """Read the cluster's slots once before any command: commands racing a fresh client's
        own discovery find their connections closed under them (redis-py 8)."""
        async with self._ready_lock:
            if not self._ready:
                try:
                    await self.redis.initialize()
                except _FAILURES as exc:
                    raise StoreError("connect", _cause(exc)) from exc
                self._ready = True

    async def connect(self) -> None:
        await self._start()
        await super().connect()

    async def get_key(self, key_id: str) -> KeyRecord | None:
        if not self._ready:
            await self._start()
        async with self._in_flight:
            return await super().get_key(key_id)

    async def share_signals(self, batch: Sequence[KeySignals], now: float) -> list[Counts]:
        if not self._ready:
            await self._start()
        return await super().share_signals(batch, now)

    async def list_keys(self, tenant: str | None = None) -> list[KeyRecord]:
        if not self._ready:
            await self._start()
        return await super().list_keys(tenant)

    async def _write(self, operation: str, key_id: str,
                     decide: Callable[[KeyRecord | None], KeyRecord]) -> KeyRecord:
        if not self._ready:
            await self._start()
        return await super()._write(operation, key_id, decide)

    async def _run(self, script: LuaScript, keys: list[str], args: list[Any]) -> Any:
        if not self._ready:
            await self._start()
        async with self._in_flight:
            return await super()._run(script, keys, args)

    async def _apply(self, plan: Plan, now: float) -> list[CounterAnswer]:
        groups = _by_tag(plan)
        if len(groups) == 1:
            return await super()._apply(plan, now)
        parts = [tuple(plan[i] for i in indexes) for indexes in groups]
        results = await asyncio.gather(*(super(RedisClusterStore, self)._apply(part, now)
                                         for part in parts), return_exceptions=True)
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        replies = [[] if isinstance(r, BaseException) else r for r in results]
        passed = [bool(r) and all(a.allowed for a in r) for r in replies]
        if failed is None and all(passed):
            return _in_plan_order(groups, replies)
        await asyncio.gather(*(self._undo(part, answers, now) for part, answers, ok
                               in zip(parts, replies, passed, strict=True) if ok))
        if failed is not None:
            raise failed  # after giving back what the groups that passed had charged
        return [a._replace(lease=None) if a.lease else a
                for a in _in_plan_order(groups, replies)]

    async def _undo(self, group: Plan, answers: list[CounterAnswer], now: float) -> None:
        """Give back what an allowing group charged, its slots and its costs: one call."""
        await super()._settle([a.lease for a in answers if a.lease is not None],
                              [(c, c.cost, 0) for c in group if c.kind != CONCURRENCY and c.cost],
                              now)

    async def _release(self, leases: Sequence[Lease], now: float) -> int:
        return await self._settle(leases, (), now)

    async def _settle(self, leases: Sequence[Lease], corrections: Sequence[Correction],
                      now: float) -> int:
        """One settle call per hash tag, sent together."""
        groups: dict[str, tuple[list[Lease], list[Correction]]] = {}
        for lease in leases:
            groups.setdefault(_tag(lease.key), ([], []))[0].append(lease)
        for correction in corrections:
            groups.setdefault(_tag(correction[0].key), ([], []))[1].append(correction)
        if len(groups) == 1:
            return await super()._settle(leases, corrections, now)
        counts = await asyncio.gather(*(super(RedisClusterStore, self)._settle(*group, now)
                                        for group in groups.values()))
        return sum(counts)


def cluster_client(url: str, socket_timeout: float = SOCKET_TIMEOUT,
                   connect_timeout: float = CONNECT_TIMEOUT) -> RedisCluster:
    """A RedisCluster for ``url``; a malformed one raises ValueError saying what is wrong."""
    scheme, _, rest = url.partition("://")
    rest, _, query = rest.partition("?")
    rest = rest.rstrip("/")
    userinfo, at, hosts = rest.rpartition("@")
    username, _, password = userinfo.partition(":") if at else ("", "", "")
    nodes = [_node(seed) for seed in hosts.split(",")]
    options: dict[str, Any] = {"socket_timeout": socket_timeout,
                               "socket_connect_timeout": connect_timeout,
                               "max_connections": IN_FLIGHT + 8}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in _OPTIONS:
            raise ValueError(f"unknown option {name!r} (known: {', '.join(_OPTIONS)})")
        try:
            options[name] = _OPTIONS[name](value)
        except ValueError:
            raise ValueError(f"option {name!r} is not a number") from None
    return _Cluster(startup_nodes=nodes, username=unquote(username) or None,
                    password=unquote(password) or None, ssl=scheme.startswith("rediss"),
                    retry=Retry(NoBackoff(), 0),
                    **options)


def _node(seed: str) -> ClusterNode:
    host, colon, port = seed.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"seed {seed!r} is not host:port")
    return ClusterNode(host.strip("[]"), int(port))


def _tag(key: str) -> str:
    """The hash tag Redis Cluster hashes: what is between the first '{' and the next '}'."""
    start = key.find("{")
    end = key.find("}", start + 1)
    return key[start + 1:end] if start >= 0 and end > start + 1 else key


def _in_plan_order(groups: list[list[int]],
                   replies: list[list[CounterAnswer]]) -> list[CounterAnswer]:
    pairs = sorted((i, answer) for indexes, answers in zip(groups, replies, strict=True)
                   for i, answer in zip(indexes, answers, strict=True))
    return [answer for _, answer in pairs]


def _by_tag(plan: Plan) -> list[list[int]]:
    """The plan's counter indexes grouped by hash tag, in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(plan):
        groups.setdefault(_tag(c.key), []).append(i)
    return list(groups.values())
