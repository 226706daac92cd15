"""Concurrent httpx clients sending to a served gatekeeper without pause, every reply labelled
with the phases of the run it was sent and answered in (``up``, ``down``, ...), which the test
moves on as it kills and restarts Redis; and an app that counts the requests reaching it in
each phase."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from statistics import median

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
    done: float
    """When it was answered (``time.time()``)."""


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
                                            headers={"authorization": f"Bearer {self.key}",
                                                     "x-load-phase": phase})
                    status, body = sent.status_code, sent.content
                except httpx.HTTPError as exc:
                    status, body = 0, repr(exc).encode()
                self.replies.append(Reply(phase, self.phase, status, body,
                                          time.monotonic() - started, time.time()))
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


async def through_an_outage(load: PhasedLoad, kill: Callable[[], object],
                            restore: Callable[[], Awaitable[object]], mode: str,
                            fail_open: Callable[[str], float | None]) -> float:
    """Run ``load``: ``up`` (a second of answers), ``killing`` (``kill()``), ``down`` until
    ``restore()`` returns (it may name phases of its own), ``back`` until the store decides
    again (fail_closed: a 200; fail_open: ``gatekeeper_store_fail_open`` read 0 through
    ``fail_open``), ``recovered`` (a second). Returns the seconds ``back`` took."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(load.run)
        await load.until(lambda r: r.status == 200, 10)
        await anyio.sleep(1.0)
        load.phase = "killing"
        kill()
        load.phase = "down"
        await restore()
        load.phase = "back"
        if mode == "fail_closed":
            recovery = await load.until(lambda r: r.status == 200, 20)
        else:
            recovery = await load.until(
                lambda r: fail_open("gatekeeper_store_fail_open") == 0, 20)
        load.phase = "recovered"
        await anyio.sleep(1.0)
        load.stop()
    return recovery


def judge(load: PhasedLoad, app: PhaseApp, mode: str, limit: int, timeout: float,
          back_at: float = math.inf) -> str:
    """Assert that every request was decided by the fail rule of ``mode`` (never a 500 or no
    answer; while down, nothing waited much past the store's ``timeout``; fail_closed: 503
    ``store_unavailable``, nothing reaching the app; fail_open: the key's ``limit`` held,
    counted in the process from zero), and that the store decides again after. A summary.

    ``back_at``: when the store could answer again (``time.time()``), if that is known to
    be before the test saw it (a replica promoted by the cluster, found by polling): down is
    then only what was answered, or reached the app, before it."""
    everything = [r.status for r in load.replies]
    assert 500 not in everything and 0 not in everything, \
        [r for r in load.replies if r.status in (0, 500)][:3]
    down = [r for r in load.of("down") if r.done < back_at]
    statuses = Counter(r.status for r in down)
    assert len(down) >= 10  # the clients kept sending while the store was down
    assert max(r.seconds for r in down) < 2 * timeout + 1.0, max(r.seconds for r in down)
    if mode == "fail_closed":
        assert set(load.statuses("up")) == {200}
        assert set(statuses) == {503}
        assert all(b"store_unavailable" in r.body for r in down)
        # nothing reached the app while the store was down
        assert not [t for sent, t in app.arrivals if sent == "down" and t < back_at]
        assert set(load.statuses("recovered")) == {200}, \
            [(r.status, r.body[:160]) for r in load.of("recovered") if r.status != 200][:3]
    else:
        assert set(load.statuses("up")) == {200, 429}
        assert load.statuses("up")[200] <= limit  # counted in the store
        outage: Counter[int] = Counter()
        for phase in ("killing", "down", "restarting", "back"):
            outage += load.statuses(phase)
        assert set(statuses) <= {200, 429}
        assert 1 <= outage[200] <= limit and outage[429] >= 1
        assert set(load.statuses("recovered")) <= {200, 429}
    return (f"{len(load.replies)} requests, {len(down)} while down (latency median "
            f"{median(r.seconds for r in down) * 1000:.1f} ms, max "
            f"{max(r.seconds for r in down) * 1000:.1f} ms, {dict(statuses)})")


class PhaseApp:
    """The protected app: answers 200 and keeps, for each request reaching it, the phase it
    was sent in and when it arrived (a request decided just before a kill reaches the app just
    after it: counted by its arrival phase it would look like one let through while the store
    was down)."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[str, float]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # supported, so gatekeeper closes its store at shutdown
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        sent = next((v for k, v in scope["headers"] if k == b"x-load-phase"), b"?")
        self.arrivals.append((sent.decode(), time.time()))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
