"""The script lane (``redis_lane.py``) on the session's real redis-server: a reply that came
too late, or a call that was cancelled, never answers the next command; the lane holds at most
its pool's bound of connections and every waiting call gets one; error replies raise."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import BlockingConnectionPool
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gatekeeper.store.redis_counters import packed_command
from gatekeeper.store.redis_lane import ScriptLane

pytestmark = pytest.mark.anyio

BUSY = """local t = redis.call('TIME')
local until_us = tonumber(t[1]) * 1000000 + tonumber(t[2]) + tonumber(ARGV[1])
repeat
  t = redis.call('TIME')
until tonumber(t[1]) * 1000000 + tonumber(t[2]) >= until_us
return ARGV[2]"""
"""Keeps the server busy for ARGV[1] microseconds, then answers ARGV[2]."""


def lane(port: int, *, timeout: float = 2.0, size: int = 4) -> ScriptLane:
    pool = BlockingConnectionPool.from_url(f"redis://127.0.0.1:{port}/0", max_connections=size,
                                           socket_timeout=timeout, socket_connect_timeout=2.0)
    return ScriptLane(pool)


def busy(us: int, answer: str) -> bytes:
    return packed_command("EVAL", BUSY, "0", str(us), answer)


async def test_a_late_reply_never_answers_the_next_command(redis_port: int) -> None:
    made = lane(redis_port, timeout=0.1, size=1)
    try:
        await made.call(packed_command("PING"))  # connected: the command timeout alone applies
        with pytest.raises(RedisTimeoutError):
            await made.call(busy(300_000, "late"))
        assert await made.call(busy(0, "next")) == b"next"  # not b"late"
        assert await made.call(packed_command("ECHO", "again")) == b"again"
    finally:
        await made.close()


async def test_a_cancelled_call_leaves_no_reply_behind(redis_port: int) -> None:
    made = lane(redis_port, size=1)
    try:
        task = asyncio.get_running_loop().create_task(made.call(busy(200_000, "cancelled")))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await made.call(packed_command("ECHO", "mine")) == b"mine"
    finally:
        await made.close()


async def test_calls_beyond_the_bound_wait_for_a_connection(redis_port: int) -> None:
    made = lane(redis_port, size=2)
    try:
        replies = await asyncio.gather(*(made.call(packed_command("ECHO", str(i)))
                                         for i in range(40)))
        assert replies == [str(i).encode() for i in range(40)]
        assert made._open == 2  # never more than the pool's bound
    finally:
        await made.close()


async def test_error_replies_raise_and_keep_the_connection(redis_port: int) -> None:
    made = lane(redis_port, size=1)
    try:
        with pytest.raises(NoScriptError):
            await made.call(packed_command("EVALSHA", "0" * 40, "0"))
        with pytest.raises(ResponseError):
            await made.call(packed_command("NOSUCHCOMMAND"))
        assert await made.call(packed_command("ECHO", "fine")) == b"fine"
        assert made._open == 1
    finally:
        await made.close()
