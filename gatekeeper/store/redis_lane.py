"""A lean path for the counter scripts: one EVALSHA already in wire format, written to a
connection of the lane's own, its reply handed back as soon as it is parsed, nothing else.

redis-py's ``Redis.evalsha`` is most of what a limited request costs beyond the round trip
itself: its pool takes a condition, a timeout scope and observability hooks per command, the
arguments are encoded one by one, a response callback is looked up, and the write runs under
``wait_for`` (a task per command). Here the command is bytes the store packed once per plan
(``redis_counters.packed_apply``) and the connection comes off a plain free list.

A connection is redis-py's own (made from the store's pool settings: TLS, password, database
alike) up to its handshake; then the lane takes its socket over (``_Wire``, an asyncio
protocol): each reply is parsed by hiredis where it arrives and resolves the one call waiting
for it, without redis-py's stream reader, its per-command checks or a timeout scope (the
lane's one timer fails what is overdue: ``_expire``).

A connection whose reply was not read in full (timeout, cancellation, a dropped socket) is
closed before it is used again, so a late reply never answers the next command; one found
closed while idle (the server restarted) is replaced before use.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import hiredis
from redis._parsers.base import BaseParser
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

_MORE = object()
"""hiredis's answer while a reply is still incomplete."""
_CLOSED = "Connection closed by server."


class _Wire(asyncio.Protocol):
    """One connection's socket after redis-py's handshake: bytes in, replies out."""

    def __init__(self, conn: AbstractConnection) -> None:
        self.conn = conn
        """redis-py's connection, which made the socket and closes it."""
        writer = conn._writer
        assert writer is not None
        self.transport: Any = writer.transport
        self._stream_protocol: Any = self.transport.get_protocol()
        """redis-py's, told when the socket closes, so its ``disconnect`` does not wait."""
        options: dict[str, Any] = {"protocolError": InvalidResponse,
                                   "replyError": BaseParser.parse_error,
                                   "notEnoughData": _MORE}
        if conn.encoder.decode_responses:
            options["encoding"] = conn.encoder.encoding
            options["errors"] = conn.encoder.encoding_errors
        self.reader = hiredis.Reader(**options)
        self.waiter: asyncio.Future[Any] | None = None
        self.deadline = 0.0
        """The event loop's time by which the reply is due."""
        self.closed = False
        self.transport.set_protocol(self)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiter = self.waiter
        if waiter is None:  # nobody asked: never read as the next command's reply
            self.transport.close()
            return
        try:
            reply = self.reader.gets()
        except Exception as exc:  # a protocol error: the stream cannot be trusted any more
            self.waiter = None
            self.transport.close()
            if not waiter.done():
                waiter.set_exception(exc)
            return
        if reply is not _MORE:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(reply)

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(RedisConnectionError(_CLOSED))
        self._stream_protocol.connection_lost(exc)


class ScriptLane:
    __slots__ = ("_busy", "_idle", "_make", "_open", "_waiters", "_watch", "connect_timeout",
                 "size", "timeout")

    def __init__(self, pool: ConnectionPool) -> None:
        """Connections like ``pool``'s, as many at most as it may hold. Its socket timeout
        bounds one command on a connected connection; a fresh connection also gets its connect
        timeout, which bounds the wait for a free connection too."""
        kwargs = dict(pool.connection_kwargs)
        self.timeout = float(kwargs.get("socket_timeout") or 1.0)
        self.connect_timeout = float(kwargs.get("socket_connect_timeout") or 1.0)
        kwargs["socket_timeout"] = None  # the lane's own timer bounds each command
        connection_class = pool.connection_class

        def make() -> AbstractConnection:
            return connection_class(**kwargs)
        self._make = make
        self.size = pool.max_connections
        self._idle: list[_Wire | None] = []
        """Free connections; None: a free place for one, not yet connected."""
        self._open = 0
        self._waiters: deque[asyncio.Future[_Wire | None]] = deque()
        self._busy: set[_Wire] = set()
        """The connections with a call waiting for its reply."""
        self._watch: asyncio.TimerHandle | None = None

    async def call(self, packed: bytes) -> Any:
        """Send one packed command, return its reply; a Redis error reply raises it (NOSCRIPT
        as ``NoScriptError``), a failure raises redis-py's ``ConnectionError`` or
        ``TimeoutError``."""
        wire = self._idle.pop() if self._idle else await self._acquire()
        try:
            if wire is None or wire.closed:
                wire = await self._connect(wire)
            loop = asyncio.get_running_loop()
            waiter = wire.waiter = loop.create_future()
            wire.deadline = loop.time() + self.timeout
            wire.transport.write(packed)
            busy = self._busy
            busy.add(wire)
            if self._watch is None:
                self._watch = loop.call_later(self.timeout / 4, self._expire)
            try:
                reply = await waiter
            finally:
                busy.discard(wire)
        except BaseException:
            if wire is not None:  # whatever was in flight is not read later
                wire.waiter = None
                await wire.conn.disconnect(nowait=True)
            self._release(None)
            raise
        self._release(wire)
        if isinstance(reply, ResponseError):  # read in full: the connection is fine
            raise reply
        return reply

    def _expire(self) -> None:
        """Fail the calls whose reply is overdue, every quarter of the timeout while any
        waits: one timer for the lane, not one per call (a timer per call added a quarter to
        the call's instructions, measured), so a reply is awaited up to 1.25 timeouts."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for wire in self._busy:
            waiter = wire.waiter
            if waiter is not None and wire.deadline <= now and not waiter.done():
                waiter.set_exception(RedisTimeoutError(f"no reply within {self.timeout:.3g} s"))
        self._watch = loop.call_later(self.timeout / 4, self._expire) if self._busy else None

    async def _connect(self, stale: _Wire | None) -> _Wire:
        """A connection in place of ``stale`` (closed while idle) or of a free place."""
        if stale is not None:
            await stale.conn.disconnect(nowait=True)
        conn = self._make()
        try:
            async with asyncio.timeout(self.timeout + self.connect_timeout):
                await conn.connect()  # type: ignore[no-untyped-call]
        except TimeoutError:
            await conn.disconnect(nowait=True)
            raise RedisTimeoutError(f"not connected within "
                                    f"{self.timeout + self.connect_timeout:.3g} s") from None
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        return _Wire(conn)

    async def _acquire(self) -> _Wire | None:
        if self._open < self.size:
            self._open += 1
            return None
        waiter: asyncio.Future[_Wire | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.connect_timeout):
                return await waiter
        except BaseException as exc:  # timed out or cancelled
            if waiter.done() and not waiter.cancelled():  # handed one as it gave up
                self._release(waiter.result())
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise RedisConnectionError(f"no free connection within "
                                           f"{self.connect_timeout:.3g} s") from None
            raise

    def _release(self, wire: _Wire | None) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(wire)
                return
        self._idle.append(wire)

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        idle, self._idle = self._idle, []
        self._open -= len(idle)
        for wire in idle:
            if wire is not None:
                await wire.conn.disconnect()
