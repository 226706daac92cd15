"""A lean path for the counter scripts: one EVALSHA already in wire format, sent on a
connection of the lane's own, its reply read back, nothing else.

redis-py's ``Redis.evalsha`` is most of what a limited request costs beyond the round trip
itself: its pool takes a condition, a timeout scope and observability hooks per command, the
arguments are encoded one by one, a response callback is looked up, and the write runs under
``wait_for`` (a task per command). Here the command is bytes the store packed once per plan
(``redis_counters.packed_apply``), the connection comes off a plain free list, and one
``asyncio.timeout`` bounds connect, write and read together. The connections are redis-py's
own (made from the store's pool settings: TLS, password, database, hiredis parser alike), so
only the per-command machinery is left out, not the protocol handling.

A connection whose reply was not read in full (timeout, cancellation, a dropped socket) is
disconnected before it is used again, so a late reply never answers the next command; one
found closed while idle (the server restarted) is reconnected before use.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


class ScriptLane:
    __slots__ = ("_idle", "_make", "_open", "_waiters", "connect_timeout", "size", "timeout")

    def __init__(self, pool: ConnectionPool) -> None:
        """Connections like ``pool``'s, as many at most as it may hold. Its socket timeout
        bounds one command on a connected connection; a fresh connection also gets its connect
        timeout, which bounds the wait for a free connection too."""
        kwargs = dict(pool.connection_kwargs)
        self.timeout = float(kwargs.get("socket_timeout") or 1.0)
        self.connect_timeout = float(kwargs.get("socket_connect_timeout") or 1.0)
        kwargs["socket_timeout"] = None  # the lane's own timeout covers the whole exchange
        connection_class = pool.connection_class

        def make() -> AbstractConnection:
            return connection_class(**kwargs)
        self._make = make
        self.size = pool.max_connections
        self._idle: list[AbstractConnection] = []
        self._open = 0
        self._waiters: deque[asyncio.Future[AbstractConnection]] = deque()

    async def call(self, packed: bytes) -> Any:
        """Send one packed command, return its reply; a Redis error reply raises it (NOSCRIPT
        as ``NoScriptError``), a failure raises redis-py's ``ConnectionError`` or
        ``TimeoutError``."""
        conn = self._idle.pop() if self._idle else await self._acquire()
        try:
            if not conn.is_connected:
                limit = self.timeout + self.connect_timeout
            elif await conn.can_read():  # closed (or dirty) while idle: start afresh
                await conn.disconnect()
                limit = self.timeout + self.connect_timeout
            else:
                limit = self.timeout
            async with asyncio.timeout(limit):
                await conn.send_packed_command(packed, check_health=False)
                reply = await conn.read_response()
        except ResponseError:  # the reply was read in full: the connection is fine
            self._release(conn)
            raise
        except BaseException as exc:
            await conn.disconnect(nowait=True)  # whatever was in flight is not read later
            self._release(conn)
            if isinstance(exc, TimeoutError):
                raise RedisTimeoutError(f"no reply within {limit:.3g} s") from None
            raise
        self._release(conn)
        return reply

    async def _acquire(self) -> AbstractConnection:
        if self._open < self.size:
            self._open += 1
            return self._make()
        waiter: asyncio.Future[AbstractConnection] = asyncio.get_running_loop().create_future()
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

    def _release(self, conn: AbstractConnection) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        self._open -= len(idle)
        for conn in idle:
            await conn.disconnect()
