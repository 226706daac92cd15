"""The Redis store: key records and limit counters shared by every replica and the CLI.

``redis://host:6379/0`` and ``rediss://`` (TLS) name one server; redis-py's asyncio client with
the hiredis parser, a bounded pool, short timeouts and no retries (a retried script could
charge twice; a dead server should cost milliseconds, then the caller's fail rule). Any
redis-py URL option overrides the defaults here (``?socket_timeout=0.5``).

Key records are JSON strings (``gk:{keys}:k:<id>``) with two creation-ordered indexes (all
keys, one per tenant), all under one hash tag so a write is one MULTI on one node; a write is
a WATCH compare-and-set applying ``checked_update``, the rule every backend shares, and is
announced to every replica (``redis_changes.py``).

Shared resale signals (``SignalStore``): per key, HyperLogLogs of its values and request
counters per bucket of its window, one pipelined batch a second (``redis_signals.py``).

Counters: one request's whole plan is one EVALSHA of ``lua/apply.lua`` (``redis_counters``
packs it and reads the reply). The end of its response (slots given back, reservations
corrected) costs no round trip of its own: ``settle_later`` queues it and the next apply
carries it (``redis_settles``; a timer sends it within ``settle_delay`` seconds when no apply
comes, and ``close`` sends what is left), while ``settle`` is one EVALSHA of
``lua/settle.lua`` at once. With ``server_time=True`` (the default) the
scripts read the Redis server's clock, so replicas with skewed clocks count alike and the
``now`` argument only matters to the memory store; quota windows are still named by the
caller's ``now`` (the plan's keys), and one applied after its window ended on the server's
clock is a store error.
``server_time=False`` uses the ``now`` given (replay, tests).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any, cast

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, WatchError
from redis.maint_notifications import MaintNotificationsConfig

from gatekeeper.errors import GatekeeperError, KeyExistsError, StoreError
from gatekeeper.keys import KeyRecord
from gatekeeper.limits.gcra import to_us
from gatekeeper.limits.plan import Counter, CounterAnswer, Lease, Plan
from gatekeeper.resale.snapshot import Snapshot
from gatekeeper.store.base import Store, checked_update
from gatekeeper.store.base import decode_record as _decode
from gatekeeper.store.base import encode_record as _encode
from gatekeeper.store.counters import Correction, CounterStore, _cause
from gatekeeper.store.redis_changes import CHANNEL, key_changes
from gatekeeper.store.redis_counters import (
    Part,
    answers,
    apply_args,
    apply_command,
    apply_packed,
    bulk,
    now_arg,
    packed,
    packed_command,
    reconcile_args,
    release_args,
    settle_args,
)
from gatekeeper.store.redis_health import findings
from gatekeeper.store.redis_lane import ScriptLane
from gatekeeper.store.redis_scripts import APPLY, RECONCILE, RELEASE, SCRIPTS, SETTLE, LuaScript
from gatekeeper.store.redis_settles import DELAY, SettleQueue, Settles
from gatekeeper.store.redis_signals import counts as signal_counts
from gatekeeper.store.redis_signals import queue as queue_signals
from gatekeeper.store.signals import Counts, KeySignals, SignalStore

SOCKET_TIMEOUT = 0.1
CONNECT_TIMEOUT = 0.25
MAX_CONNECTIONS = 64
"""For key records and other commands, and as many again for the counter scripts (the lane)."""
PLANS_PACKED = 1024
"""Plans whose packed apply command is kept: a decision record reuses its plan object until a
quota window ends, so most requests send bytes packed once."""
PREFIX = "gk:{keys}:"
"""Every key record and index shares this hash tag: one slot, so a write is one MULTI."""
SCORES = "gk:{scores}:"
"""Resale score snapshots, one hash per key (``gatekeeper inspect``)."""
_SERVER_TIME = bulk("")
"""ARGV[1] of a script that reads the server's clock."""
_ALL = PREFIX + "all"
VERSION = PREFIX + "version"
_FAILURES = (Exception,)
"""What a Redis call raising means a store failure (the fail rule applies, never a 500): not
only redis-py's errors and socket errors; its cluster client, while a primary fails over, also
raises KeyError (its slot map rebuilt under a command) and AttributeError (a connection closed
under another command), seen in the failover test. The counters path treats any exception so
too (``CounterStore.apply``)."""

log = logging.getLogger("gatekeeper")


class _Packed:
    """One plan's apply command, packed: its keys and specs, and the whole command once sent
    with the server's time and nothing riding along. Holds the plan, so its id stays its."""

    __slots__ = ("keys", "plan", "specs", "whole")

    def __init__(self, plan: Plan, keys: bytes, specs: bytes) -> None:
        self.plan = plan
        self.keys = keys
        self.specs = specs
        self.whole = b""


class RedisStore(Store, CounterStore, SignalStore):
    def __init__(self, url: str, *, server_time: bool = True,
                 client: Redis | RedisCluster | None = None,
                 socket_timeout: float = SOCKET_TIMEOUT,
                 connect_timeout: float = CONNECT_TIMEOUT,
                 settle_delay: float | None = None,
                 tag: Callable[[str], str] | None = None) -> None:
        """``client``: one already made (``RedisClusterStore`` passes its cluster client, and
        ``tag``, a key's hash tag, so a settle rides only with an apply to its own slot).
        ``connect_timeout`` also bounds the wait for a free connection of the pool.
        ``settle_delay``: seconds a queued settle waits for an apply to carry it (default
        ``redis_settles.DELAY``, or the URL's ``settle_delay`` option)."""
        url, delay = settle_delay_option(url)
        self.url = url
        self.server_time = server_time
        self._closed = False
        if client is None:
            pool = BlockingConnectionPool.from_url(
                url, max_connections=MAX_CONNECTIONS, timeout=connect_timeout,
                socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout,
                retry=Retry(NoBackoff(), 0), retry_on_error=[],
                # off: redis-py skips its check for a pooled connection the server closed
                # while maintenance notifications are on ("auto" by default), so after a
                # restart every stale connection would fail one request
                maint_notifications_config=MaintNotificationsConfig(enabled=False))
            client = Redis(connection_pool=pool)
            self._lane: ScriptLane | None = ScriptLane(pool)
        else:
            self._lane = None  # a cluster: redis-py routes each command to its slot's node
        self.redis = client
        self._packed: dict[int, _Packed] = {}
        self._parts: dict[str, Part] = {}
        self._settles = SettleQueue(self._send_settles, tag,
                                    settle_delay if settle_delay is not None else delay)

    async def connect(self) -> None:
        """Load the scripts now (a server's startup), so no request pays for it (nor for the
        lane's first connection)."""
        try:
            for script in SCRIPTS:
                await self._load(script)
        except _FAILURES as exc:
            raise StoreError("connect", _cause(exc)) from exc

    # --- key records -------------------------------------------------------------------------

    async def put_scores(self, snapshots: list[Snapshot], ttl: float, now: float) -> None:
        """One pipeline: a hash per key (``gk:{scores}:<key id>``) with its ttl."""
        try:
            pipe = self.redis.pipeline(transaction=False)
            for snapshot in snapshots:
                name = SCORES + snapshot.key_id
                pipe.hset(name, mapping={"snapshot": snapshot.to_text()})
                pipe.expire(name, max(1, int(ttl)))
            await pipe.execute()
        except _FAILURES as exc:
            raise StoreError("put_scores", _cause(exc)) from exc

    async def share_signals(self, batch: Sequence[KeySignals], now: float) -> list[Counts]:
        """One pipeline for the whole batch (``redis_signals.py``), off the request path."""
        if not batch:
            return []
        try:
            pipe = self.redis.pipeline(transaction=False)
            queue_signals(pipe, batch, now)
            replies = await pipe.execute()
        except _FAILURES as exc:
            raise StoreError("share_signals", _cause(exc)) from exc
        return signal_counts(batch, replies)

    async def get_score(self, key_id: str, now: float) -> Snapshot | None:
        try:
            text = await self.redis.hget(SCORES + key_id, "snapshot")
        except _FAILURES as exc:
            raise StoreError("get_score", _cause(exc)) from exc
        return None if text is None else Snapshot.from_text(text)

    async def get_key(self, key_id: str) -> KeyRecord | None:
        try:
            text = await self.redis.get(PREFIX + "k:" + key_id)
        except _FAILURES as exc:
            raise StoreError("get_key", _cause(exc)) from exc
        return None if text is None else _decode(text)

    async def create_key(self, record: KeyRecord) -> None:
        def insert(current: KeyRecord | None) -> KeyRecord:
            if current is not None:
                raise KeyExistsError(record.key_id)
            return record
        await self._write("create_key", record.key_id, insert)

    async def update_key(self, record: KeyRecord, expected_version: int) -> KeyRecord:
        return await self._write("update_key", record.key_id,
                                 lambda current: checked_update(current, record, expected_version))

    async def list_keys(self, tenant: str | None = None) -> list[KeyRecord]:
        index = _ALL if tenant is None else _tenant_index(tenant)
        try:
            ids = await self.redis.zrange(index, 0, -1)
            names = [PREFIX + "k:" + i.decode() for i in cast("list[bytes]", ids)]
            texts = await self.redis.mget(names) if names else []
        except _FAILURES as exc:
            raise StoreError("list_keys", _cause(exc)) from exc
        return [_decode(text) for text in texts if text is not None]

    async def _write(self, operation: str, key_id: str,
                     decide: Callable[[KeyRecord | None], KeyRecord]) -> KeyRecord:
        """Read, decide, write only if nobody wrote in between (WATCH): a lost race reads
        again, and ``decide`` then refuses (every write moves the version on)."""
        name = PREFIX + "k:" + key_id
        try:
            for _ in range(3):
                async with self.redis.pipeline(transaction=True) as pipe:
                    try:
                        await pipe.watch(name)
                        text = await pipe.get(name)
                        current = None if text is None else _decode(text)
                        stored = decide(current)
                        pipe.multi()  # type: ignore[no-untyped-call]
                        pipe.set(name, _encode(stored))
                        if current is not None and current.tenant != stored.tenant:
                            pipe.zrem(_tenant_index(current.tenant), key_id)
                        pipe.zadd(_tenant_index(stored.tenant), {key_id: stored.created_at})
                        pipe.zadd(_ALL, {key_id: stored.created_at})
                        pipe.incr(VERSION)
                        await pipe.execute()
                        break
                    except WatchError:
                        continue
            else:
                raise StoreError(operation, "the record kept changing under three writes in a "
                                            "row")
        except GatekeeperError:
            raise  # decide's refusal (the key exists, was revoked, changed), or the above
        except _FAILURES as exc:
            raise StoreError(operation, _cause(exc)) from exc
        try:
            await self.redis.publish(CHANNEL, key_id)
        except _FAILURES as exc:  # written: the version counter and cache_ttl still cover it
            log.warning("key %s written, but its change was not published: %s", key_id,
                        _cause(exc))
        return stored

    async def keys_version(self) -> int:
        """Moves on with every key record write: a replica that sees it change knows some
        record changed, even if it missed the notification (``key_changes``)."""
        try:
            return int(await self.redis.get(VERSION) or 0)
        except _FAILURES as exc:
            raise StoreError("keys_version", _cause(exc)) from exc

    async def describe(self) -> tuple[str, list[str]]:
        """What the server says about itself, judged (``redis_health.findings``): for
        ``gatekeeper check-config``."""
        try:
            if isinstance(self.redis, RedisCluster):
                nodes = list((await self.redis.info(target_nodes=RedisCluster.PRIMARIES)).values())
            else:
                nodes = [await self.redis.info()]
        except _FAILURES as exc:
            raise StoreError("describe", _cause(exc)) from exc
        return findings(nodes)

    def key_changes(self) -> AsyncGenerator[str, None]:
        """Key ids as other processes change them (``redis_changes.key_changes``): a replica
        forgets a changed key's cached verification at once; ``ALL``: forget every one."""
        return key_changes(self.redis, _FAILURES, lambda: self._closed)

    # --- counters ----------------------------------------------------------------------------

    def _now_us(self, now: float) -> int | None:
        return None if self.server_time else to_us(now)

    async def apply(self, plan: Plan, now: float) -> list[CounterAnswer]:
        """One EVALSHA, carrying the settles queued for the plan's tag (they run first). On
        one server, sent on the lane straight from here: ``CounterStore.apply`` over
        ``_apply`` would put two more coroutines on every limited request's path."""
        lane = self._lane
        if lane is None or not plan:
            return await super().apply(plan, now)
        riding = self._settles.take(plan[0][1]) if self._settles.waiting else None
        try:
            command = self._packed_apply(plan, now, riding)
            try:
                reply = await lane.call(command)
            except NoScriptError:
                await self._load(APPLY)
                reply = await lane.call(command)
            return answers(plan, reply)
        except BaseException as exc:
            if riding is not None:
                self._settles.lost(riding, exc)
            if isinstance(exc, GatekeeperError) or not isinstance(exc, Exception):
                raise
            raise StoreError("apply", _cause(exc)) from exc

    async def _apply(self, plan: Plan, now: float) -> list[CounterAnswer]:
        """``apply`` through redis-py's client (a cluster's: it routes to the slot's node)."""
        if not plan:
            return []
        riding = self._settles.take(plan[0].key) if self._settles.waiting else None
        keys, specs = apply_args(plan)
        args = [now_arg(self._now_us(now)), specs]
        if riding is not None:
            keys = riding.keys() + keys
            args.extend(riding.args())
        try:
            reply = await self._run(APPLY, keys, args)
        except BaseException as exc:
            if riding is not None:
                self._settles.lost(riding, exc)
            raise
        return answers(plan, reply)

    def _packed_apply(self, plan: Plan, now: float, riding: Settles | None) -> bytes:
        """The apply command for ``plan``, packed once per plan object (whole with the
        server's time and nothing riding along); a new plan object (a priced one) reuses its
        counters' fixed parts."""
        found = self._packed.get(id(plan))
        if found is None or found.plan is not plan:
            keys, specs = apply_packed(plan, self._parts)
            if len(self._packed) >= PLANS_PACKED:
                self._packed.clear()
            found = self._packed[id(plan)] = _Packed(plan, keys, specs)
        if self.server_time:
            if riding is None:
                if not found.whole:
                    found.whole = apply_command(APPLY.sha, len(plan), found.keys, _SERVER_TIME,
                                                found.specs)
                return found.whole
            now_bulk = _SERVER_TIME
        else:
            now_bulk = bulk(to_us(now))
        return apply_command(APPLY.sha, len(plan), found.keys, now_bulk, found.specs, riding)

    def settle_later(self, leases: Sequence[Lease], corrections: Sequence[Correction],
                     now: float) -> None:
        """Queue a response's end to ride with the next apply (``redis_settles``): no round
        trip of its own, no I/O here. Sent once: a failed call's settles are dropped, and a
        slot whose release was lost is freed when its lease expires."""
        if self._closed:
            log.warning("a response ended after the store closed: its settle is dropped (its "
                        "slots are freed when their leases expire)")
            return
        self._settles.add(leases, corrections, self._now_us(now))

    async def _send_settles(self, settles: Settles) -> None:
        """The timer's (or ``close``'s) one ``settle.lua`` call for one tag's queue."""
        await self._run(SETTLE, settles.keys(), [now_arg(settles.now_us), *settles.args()])

    async def _release(self, leases: Sequence[Lease], now: float) -> int:
        if not leases:
            return 0
        keys, args = release_args(leases, self._now_us(now))
        return int(await self._run(RELEASE, keys, args))

    async def _reconcile(self, counter: Counter, reserved: int, actual: int,
                         now: float) -> None:
        args = reconcile_args(counter, reserved, actual, self._now_us(now))
        if args is not None:
            await self._run(RECONCILE, [counter.key], args)

    async def _settle(self, leases: Sequence[Lease], corrections: Sequence[Correction],
                      now: float) -> int:
        """One EVALSHA of ``settle.lua``: every slot given back, every reservation corrected."""
        found = settle_args(leases, corrections, self._now_us(now))
        return 0 if found is None else int(await self._run(SETTLE, *found))

    async def _run(self, script: LuaScript, keys: list[str], args: list[Any]) -> Any:
        if self._lane is None:
            return await script(self.redis, keys, args)
        return await self._call(script, packed(script.sha, keys, args))

    async def _call(self, script: LuaScript, command: bytes) -> Any:
        """``command`` (that script's EVALSHA) on the lane; loaded again once after NOSCRIPT."""
        assert self._lane is not None
        try:
            return await self._lane.call(command)
        except NoScriptError:
            await self._load(script)
            return await self._lane.call(command)

    async def _load(self, script: LuaScript) -> None:
        """SCRIPT LOAD, on the lane when there is one (its connections are the ones that
        just learnt the server restarted)."""
        if self._lane is None:
            await script.load(self.redis)
        else:
            await self._lane.call(packed_command("SCRIPT", "LOAD", script.text))

    async def close(self) -> None:
        """Send the queued settles, then close the connections."""
        await self._settles.drain()
        self._closed = True
        await self._settles.drain()  # what ended while the first drain was sending
        if self._lane is not None:
            await self._lane.close()
        await self.redis.aclose()
        if isinstance(self.redis, Redis):
            await self.redis.connection_pool.disconnect()


def settle_delay_option(url: str) -> tuple[str, float]:
    """``url`` without its ``settle_delay`` option (not redis-py's), and the option's value
    (default ``DELAY``); a bad value is a ValueError naming it."""
    base, mark, query = url.partition("?")
    if "settle_delay" not in query:
        return url, DELAY
    rest: list[str] = []
    delay = DELAY
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if name != "settle_delay":
            rest.append(pair)
            continue
        try:
            delay = float(value)
        except ValueError:
            delay = -1.0
        if not 0 < delay <= 1:
            raise ValueError("Invalid value for 'settle_delay': seconds above 0, at most 1")
    return base + (mark + "&".join(rest) if rest else ""), delay


def _tenant_index(tenant: str) -> str:
    return PREFIX + "t:" + tenant


__all__ = ["RedisStore"]
