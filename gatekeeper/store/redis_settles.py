"""The ends of responses waiting for a ride to Redis (deferred settle).

A response's end (its concurrency slots given back, its token and spend reservations corrected
with the real usage) needs no round trip of its own: it is queued here, per hash tag, and the
next apply to the same tag carries it (``apply.lua`` settles first, then charges its plan, in
one script, so a slot given back is free for the very request that carries it). What no apply
picked up within ``delay`` seconds (an idle replica, a tag with no more traffic) goes out from a
timer as one ``settle.lua`` call per tag; ``drain`` (the store's ``close``) sends what is left.
Meanwhile a slot stays held up to ``delay`` longer for the other replicas.

Failure rule: a queued settle is sent once. A correction is not idempotent (a refund sent twice
refunds twice) and a failed call, a timeout above all, may have run on the server, so what a
failed call carried is logged and dropped, never sent again: a slot whose release was lost is
freed when its lease expires (the concurrency counter's period); a lost correction leaves the
reservation's estimate charged instead of the real usage. NOSCRIPT is the one failure known
not to have run: the store loads the script and sends the same command again, once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from gatekeeper.limits.plan import Lease
from gatekeeper.store.counters import Correction, _cause
from gatekeeper.store.redis_counters import correction_spec

log = logging.getLogger("gatekeeper")

DELAY = 0.01
"""Seconds a queued settle waits for an apply to carry it before the timer sends it."""
MOST = 256
"""Settles (slots and corrections) queued for one tag at most: one more sends them at once,
so a script stays small."""


class Settles:
    """One tag's queued settles, as ``settle.lua`` takes them."""

    __slots__ = ("correction_keys", "ids", "lease_keys", "now_us", "since", "specs")

    def __init__(self, since: float) -> None:
        self.lease_keys: list[str] = []
        self.ids: list[str] = []
        self.correction_keys: list[str] = []
        self.specs: list[bytes] = []
        self.now_us: int | None = None
        """The latest caller time queued (stores on the caller's clock: ``server_time=False``)."""
        self.since = since
        """The event loop's time when the first was queued."""

    def __len__(self) -> int:
        return len(self.ids) + len(self.specs)

    def keys(self) -> list[str]:
        """``settle.lua``'s KEYS: the slots', then the corrected counters'."""
        return self.lease_keys + self.correction_keys

    def args(self) -> tuple[str, bytes]:
        """``settle.lua``'s ARGV[2] and ARGV[3] (``apply.lua``'s ARGV[3] and ARGV[4])."""
        return " ".join(self.ids), b"".join(self.specs)


Send = Callable[[Settles], Awaitable[Any]]


class SettleQueue:
    __slots__ = ("_loop", "_send", "_tag", "_tasks", "_timer", "delay", "sent", "waiting")

    def __init__(self, send: Send, tag: Callable[[str], str] | None = None,
                 delay: float = DELAY) -> None:
        """``send``: one ``settle.lua`` call; ``tag``: a key's hash tag (None: one server,
        every key rides together)."""
        self.waiting: dict[str, Settles] = {}
        """By tag; the store's apply takes its tag's (``take``)."""
        self.delay = delay
        self.sent = 0
        """Calls of its own made so far (not the applies that carried settles)."""
        self._send = send
        self._tag = tag
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, leases: Sequence[Lease], corrections: Sequence[Correction],
            now_us: int | None) -> None:
        """Queue one response's end (no I/O here); nothing to settle queues nothing."""
        specs = [(c[0][1], spec) for c in corrections
                 if (spec := correction_spec(c[0], c[1], c[2])) is not None]
        if not leases and not specs:
            return
        one = self._queue("", now_us) if self._tag is None else None
        for lease in leases:
            key = lease[0]
            q = one or self._queue(key, now_us)
            q.lease_keys.append(key)
            q.ids.append(str(lease[1]))
        for key, spec in specs:
            q = one or self._queue(key, now_us)
            q.correction_keys.append(key)
            q.specs.append(spec)

    def take(self, key: str) -> Settles | None:
        """What waits for ``key``'s tag, for an apply to that tag to carry: it is then that
        apply's to send (once; ``lost`` if the apply fails)."""
        return self.waiting.pop("" if self._tag is None else self._tag(key), None)

    def lost(self, settles: Settles, exc: BaseException) -> None:
        """A call carrying ``settles`` failed: they may have run, so they are not sent again."""
        log.warning("%d queued settle(s) lost with a failed store call (%s): not sent again; "
                    "their slots are freed when their leases expire", len(settles),
                    _cause(exc) if isinstance(exc, Exception) else type(exc).__name__)

    async def drain(self) -> None:
        """Send everything queued now, and wait for what is being sent (shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        due, self.waiting = self.waiting, {}
        if due:
            await self._send_all(list(due.values()))
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _queue(self, key: str, now_us: int | None) -> Settles:
        """The queue of ``key``'s tag (on one server: the one queue, ``key`` "")."""
        tag = "" if self._tag is None else self._tag(key)
        q = self.waiting.get(tag)
        if q is None:
            loop = self._loop
            if loop is None or self._timer is None:
                loop = self._loop = asyncio.get_running_loop()
            q = self.waiting[tag] = Settles(loop.time())
            if self._timer is None:
                self._timer = loop.call_later(self.delay, self._due)
        elif len(q) >= MOST:
            del self.waiting[tag]
            self._spawn([q])
            return self._queue(key, now_us)
        if now_us is not None and (q.now_us is None or now_us > q.now_us):
            q.now_us = now_us
        return q

    def _due(self) -> None:
        """The timer: send what waited ``delay``, and wait again for the rest."""
        self._timer = None
        loop = self._loop
        assert loop is not None
        now = loop.time()
        due: list[Settles] = []
        soonest = 0.0
        for tag, q in list(self.waiting.items()):
            if q.since + self.delay <= now + 0.001:
                due.append(q)
                del self.waiting[tag]
            elif not soonest or q.since < soonest:
                soonest = q.since
        if due:
            self._spawn(due)
        if soonest:
            self._timer = loop.call_later(soonest + self.delay - now, self._due)

    def _spawn(self, due: list[Settles]) -> None:
        loop = self._loop or asyncio.get_running_loop()
        task = loop.create_task(self._send_all(due))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_all(self, due: list[Settles]) -> None:
        """One call per tag, sent together; a failure is logged (``lost``), never raised."""
        self.sent += len(due)
        results = await asyncio.gather(*(self._send(q) for q in due), return_exceptions=True)
        for q, result in zip(due, results, strict=True):
            if isinstance(result, BaseException):
                self.lost(q, result)
