"""The in-process ASGI driver: one ``receive``, a discarding ``send``, a timed loop, a probe.

A scenario's scope is built once; each request gets a shallow copy of it (a server hands
every request a fresh scope, and Starlette and slowapi write into it: reusing one dict would
let slowapi skip its check after the first request). No HTTP client, no server, no sockets.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, TypeVar

from benchmarks.apps import CHAT_BODY, ASGIApp, Message

T = TypeVar("T")

_REQUEST: Message = {"type": "http.request", "body": CHAT_BODY, "more_body": False}


class CheckFailed(Exception):
    """A scenario or stage did not do what it should: no numbers are printed for it."""


async def receive() -> Message:
    return _REQUEST


async def discard(message: Message) -> None:
    return None


async def run(app: ASGIApp, template: dict[str, Any], n: int) -> None:
    """``n`` requests, untimed (warm-up, and the loop instruction counts are taken over)."""
    copy = template.copy
    for _ in range(n):
        await app(copy(), receive, discard)


async def timed(app: ASGIApp, template: dict[str, Any], n: int) -> int:
    """Nanoseconds for ``n`` requests, each on a fresh shallow copy of ``template``."""
    copy = template.copy
    start = time.perf_counter_ns()
    for _ in range(n):
        await app(copy(), receive, discard)
    return time.perf_counter_ns() - start


async def probe(app: ASGIApp, template: dict[str, Any]) -> tuple[int, bytes]:
    """One request with a capturing ``send``: (status, body)."""
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await app(template.copy(), receive, send)
    starts = [m for m in sent if m["type"] == "http.response.start"]
    if len(starts) != 1:
        raise CheckFailed(f"expected one http.response.start, got {sent!r}")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return int(starts[0]["status"]), body


def rotation(items: Sequence[T], round_index: int) -> list[T]:
    """``items`` starting at ``round_index`` (mod len): round-robin order that rotates each
    round, so no item always runs first (after a GC) or last."""
    shift = round_index % len(items)
    return [*items[shift:], *items[:shift]]
