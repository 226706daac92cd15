"""Audit lines into a Redis stream, in batches, off the request path.

``add`` appends to a bounded in-process buffer (a full buffer drops the line and counts it:
a refusal flood must not grow memory or wait for Redis); a background task writes what is
buffered every ``interval`` seconds, up to ``batch`` entries per round trip, as pipelined
``XADD key MAXLEN ~ maxlen * event <event> line <json>``, so the stream keeps about ``maxlen``
entries. A Redis error drops that batch (counted, logged at most every 30 s) and the task
goes on: the audit stream is a copy for the security team's tools, the logger stays the
record. Lines are the audit logger's own (``audit.py``): never a key or a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from gatekeeper.errors import redact_url
from gatekeeper.policy.audit import stream_url
from gatekeeper.policy.model import Policy

if TYPE_CHECKING:
    from gatekeeper.metrics import Metrics

log = logging.getLogger("gatekeeper")

_QUIET = 30.0
"""Seconds between two log lines about a failing stream."""


class RedisAuditStream:
    def __init__(self, url: str, key: str, maxlen: int, *, metrics: Metrics | None = None,
                 buffer: int = 10_000, batch: int = 500, interval: float = 0.2,
                 timeout: float = 1.0) -> None:
        self.url, self.key, self.maxlen = url, key, maxlen
        self.metrics = metrics
        self.batch, self.interval, self.timeout = batch, interval, timeout
        self._lines: deque[tuple[str, str]] = deque()
        self._room = buffer
        self._task: asyncio.Task[None] | None = None
        self._client: Any = None
        self._complained = -_QUIET

    def add(self, event: str, line: str) -> None:
        """Buffer one audit line (never waits)."""
        if len(self._lines) >= self._room:
            self._count("dropped")
            return
        self._lines.append((event, line))

    def start(self) -> None:
        """Connect lazily and start writing on the running loop. Idempotent."""
        if self._task is not None:
            return
        from redis.asyncio import Redis  # redis.asyncio takes 0.3 s to import: only when used

        self._client = Redis.from_url(self.url, socket_timeout=self.timeout,
                                      socket_connect_timeout=self.timeout)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Write what is buffered (one last attempt), then close."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        while self._lines:
            await self.flush()
            if self._lines and self._failed_last:
                break
        self._count("dropped", len(self._lines))
        self._lines.clear()
        await self._client.aclose()
        self._client = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            while self._lines:
                await self.flush()
                if self._failed_last:
                    break

    _failed_last = False

    async def flush(self) -> int:
        """Write up to ``batch`` buffered lines in one round trip; the number written."""
        taken = [self._lines.popleft() for _ in range(min(self.batch, len(self._lines)))]
        if not taken:
            return 0
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for event, line in taken:
                    pipe.xadd(self.key, {"event": event, "line": line}, maxlen=self.maxlen,
                              approximate=True)
                await pipe.execute()
        except Exception as exc:  # redis errors, timeouts, a closed loop: never fatal here
            self._failed_last = True
            self._count("dropped", len(taken))
            now = asyncio.get_running_loop().time()
            if now - self._complained >= _QUIET:
                self._complained = now
                log.warning("audit stream %s at %s not written (%d lines dropped): %s",
                            self.key, redact_url(self.url), len(taken), type(exc).__name__)
            return 0
        self._failed_last = False
        self._count("written", len(taken))
        return len(taken)

    def _count(self, result: str, lines: int = 1) -> None:
        if self.metrics is not None and lines:
            self.metrics.audit_stream.labels(result).inc(lines)


def audit_stream_for(policy: Policy, store: object, metrics: Metrics | None) -> RedisAuditStream:
    """The policy's stream (``policy.audit_stream`` must be set); a ConfigError naming
    ``audit.redis_stream.url`` when neither it nor the store is a Redis URL."""
    assert policy.audit_stream is not None
    found = policy.audit_stream
    url = stream_url(found, policy.store or getattr(store, "url", None))
    return RedisAuditStream(url, found.key, found.maxlen, metrics=metrics)
