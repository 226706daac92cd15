"""Concurrent httpx clients sending to a served gatekeeper without pause, every reply labelled
with the phases of the run it was sent and answered in (``up``, ``down``, ...), which the test
moves on as it kills and restarts Redis; and an app that counts the requests reaching it in
each phase."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
import httpx

from gatekeeper.types import Receive, Scope, Send


@dataclass(frozen=True)
class Reply:
    phase: str
    """The phase it was sent in."""
    answered: str
    """The phase it was answered in."""
    status: int
    """0: the client got no answer at all (``body`` says why)."""
    body: bytes
    seconds: float


@dataclass
class PhasedLoad:
    url: str
    key: str
    clients: int = 8
    phase: str = "up"
    replies: list[Reply] = field(default_factory=list)
    _stop: anyio.Event = field(default_factory=anyio.Event)

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(self.clients):
                tg.start_soon(self._client)

    def stop(self) -> None:
        self._stop.set()

    async def _client(self) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            while not self._stop.is_set():
                phase, started = self.phase, time.monotonic()
                try:
                    sent = await client.get(self.url,
                                            headers={"authorization": f"Bearer {self.key}"})
                    status, body = sent.status_code, sent.content
                except httpx.HTTPError as exc:
                    status, body = 0, repr(exc).encode()
                self.replies.append(Reply(phase, self.phase, status, body,
                                          time.monotonic() - started))
                await anyio.sleep(0)

    async def until(self, done: Callable[[Reply], bool], seconds: float) -> float:
        """Wait for a reply sent in the current phase that ``done`` accepts; seconds waited."""
        started, phase, seen = time.monotonic(), self.phase, len(self.replies)
        with anyio.fail_after(seconds):
            while True:
                fresh = self.replies[seen:]
                seen += len(fresh)
                if any(r.phase == phase and done(r) for r in fresh):
                    return time.monotonic() - started
                await anyio.sleep(0.01)

    def of(self, phase: str) -> list[Reply]:
        """The replies sent and answered in ``phase``."""
        return [r for r in self.replies if r.phase == phase == r.answered]

    def statuses(self, phase: str) -> Counter[int]:
        return Counter(r.status for r in self.of(phase))


class PhaseApp:
    """The protected app: answers 200 and counts the requests reaching it by the load's phase
    at that moment (it runs on the server's thread)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.load: PhasedLoad | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        self.calls[self.load.phase if self.load else "?"] += 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
