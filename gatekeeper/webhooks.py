"""Owner webhooks: events queued on the request path, delivered by a background task.

A request never waits for a webhook: ``submit`` is a non-blocking put on a bounded queue (a
full queue drops the event, counts it and logs it), and one task started with the middleware
(``start``/``stop``, the ASGI lifespan) drains it, each delivery in its own task (at most
``concurrency`` at once) so one slow receiver does not hold the others back. A delivery is a
signed POST (``webhook_signature.py``) retried on a transport error, a timeout, 408, 429 or a
5xx, with exponential back-off and jitter, at most ``attempts`` times; any other answer is
final. Every attempt has a hard deadline (``timeout``), so a receiver that accepts the
connection and never answers costs a task for that long, never a request.

``resolve_targets`` reads each tenant's signing secret from the environment when the server
starts and on every reload; the secret is never logged, and the URL only as its ``endpoint``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from gatekeeper.budgets import crossings
from gatekeeper.clock import Clock, SystemClock
from gatekeeper.decision import Decision
from gatekeeper.errors import ConfigError, PolicyError
from gatekeeper.limits.plan import CounterAnswer, Plan
from gatekeeper.policy.model import Policy
from gatekeeper.webhook_events import Event, budget_event, flagged_event, key_event
from gatekeeper.webhook_signature import HEADER, sign_webhook

if TYPE_CHECKING:
    import httpx

    from gatekeeper.admission import Admission
    from gatekeeper.metrics import Metrics

log = logging.getLogger("gatekeeper")

MIN_SECRET_BYTES = 16
RETRIED = frozenset({408, 425, 429, 500, 502, 503, 504})
"""Answers worth another attempt; any other non-2xx answer is final."""
_REMEMBERED = 65_536
"""Events already sent, remembered to send each once (budget marks, flagged keys): bounded."""


class Target(NamedTuple):
    url: str
    endpoint: str
    """What logs show: scheme, host, port and a digest (``policy.notify.endpoint_of``)."""
    secret: bytes
    events: frozenset[str]


def resolve_targets(policy: Policy, environ: Mapping[str, str]) -> dict[str, Target]:
    """Every tenant's webhook target with its secret read from ``environ``; a PolicyError
    naming each ``secret_env`` that is unset or too short."""
    targets: dict[str, Target] = {}
    errors: list[ConfigError] = []
    for name in policy.tenants:
        try:
            target = resolve_target(policy, name, environ)
        except ConfigError as exc:
            errors.append(exc)
        else:
            if target is not None:
                targets[name] = target
    if errors:
        raise PolicyError(errors, policy.source)
    return targets


def resolve_target(policy: Policy, tenant: str, environ: Mapping[str, str]) -> Target | None:
    """``tenant``'s target (None without one), or a ConfigError naming its ``secret_env``."""
    found = policy.tenants.get(tenant)
    notify = found.notify if found is not None else None
    if notify is None:
        return None
    secret = environ.get(notify.secret_env, "").strip().encode()
    field = f"tenants.{tenant}.notify.secret_env"
    if not secret:
        raise ConfigError(field, notify.secret_env,
                          "names an environment variable that is not set")
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(field, notify.secret_env, f"holds a secret of {len(secret)} bytes; "
                                                    f"at least {MIN_SECRET_BYTES} are required")
    return Target(notify.url, notify.endpoint, secret, notify.events)


def backoff(attempt: int, base: float, cap: float, rng: Callable[[], float]) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1, 2, ...): exponential with "equal
    jitter", between half and all of ``min(cap, base * 2**(attempt-1))``. Receivers that all
    failed at once do not all come back at once, and each wait is at least the previous."""
    ceiling = min(cap, base * 2.0 ** (attempt - 1))
    return ceiling / 2 + rng() * ceiling / 2


async def deliver(client: httpx.AsyncClient, target: Target, found: Event, clock: Clock, *,
                  attempts: int, timeout: float, base: float, cap: float,
                  rng: Callable[[], float] = random.random) -> tuple[bool, int]:
    """POST ``found`` to ``target`` until it is accepted (2xx), refused for good or out of
    attempts: (accepted, attempts made). Signed afresh at each attempt (a new timestamp)."""
    import httpx  # imported when first used: it costs as much as the rest of gatekeeper

    for attempt in range(1, attempts + 1):
        headers = {"content-type": "application/json", HEADER: sign_webhook(
            target.secret, int(clock.now()), found.body), "gatekeeper-event": found.type,
            "gatekeeper-delivery": found.id, "user-agent": "gatekeeper-webhooks"}
        problem: str
        try:
            async with asyncio.timeout(timeout):
                reply = await client.post(target.url, content=found.body, headers=headers)
        except (httpx.HTTPError, TimeoutError, OSError) as exc:
            problem = f"{type(exc).__name__}"
        else:
            if 200 <= reply.status_code < 300:
                return True, attempt
            problem = f"HTTP {reply.status_code}"
            if reply.status_code not in RETRIED:
                log.warning("webhook %s to %s refused (%s); not retried", found.type,
                            target.endpoint, problem)
                return False, attempt
        if attempt < attempts:
            await asyncio.sleep(backoff(attempt, base, cap, rng))
    log.warning("webhook %s to %s failed after %d attempts (last: %s)", found.type,
                target.endpoint, attempts, problem)
    return False, attempts


class Notifier:
    """A Gatekeeper's webhook outbox. ``targets`` is replaced whole on start and reload."""

    def __init__(self, metrics: Metrics | None = None, clock: Clock | None = None, *,
                 queue_size: int = 1000, attempts: int = 5, timeout: float = 2.0,
                 backoff: float = 0.5, max_backoff: float = 30.0, concurrency: int = 8,
                 flag_every: float = 3600.0, rng: Callable[[], float] = random.random) -> None:
        """``timeout``: seconds for one attempt, connection to last byte; ``backoff``: the
        first retry's wait (doubling, up to ``max_backoff``); ``flag_every``: a flagged key
        is announced at most once per this many seconds (flags are decided per record)."""
        for name, value in (("queue_size", queue_size), ("attempts", attempts),
                            ("concurrency", concurrency), ("timeout", timeout)):
            if not value > 0:
                raise ConfigError(f"Notifier({name}=...)", value, "must be above 0")
        self.metrics = metrics
        self.clock = clock or SystemClock()
        self.targets: dict[str, Target] = {}
        self.attempts, self.timeout = attempts, timeout
        self.base, self.cap, self.rng = backoff, max_backoff, rng
        self.flag_every = flag_every
        self._queue: asyncio.Queue[Event] = asyncio.Queue(queue_size)
        self._slots_total = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._sent: OrderedDict[str, float] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._deliveries: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

    # --- the request path: cheap, never waits ---------------------------------------------

    def submit(self, found: Event) -> bool:
        """Queue ``found`` for its tenant's target; False when dropped (no target, the
        tenant does not want that event, or the queue is full)."""
        target = self.targets.get(found.tenant)
        if target is None or found.type not in target.events:
            return False
        try:
            self._queue.put_nowait(found)
        except asyncio.QueueFull:
            self._count(found.type, "dropped")
            log.warning("webhook %s for tenant %s dropped: %d events already queued",
                        found.type, found.tenant, self._queue.qsize())
            return False
        return True

    def budgets(self, admission: Admission, plan: Plan,
                answers: Sequence[CounterAnswer]) -> None:
        """The admission's hook (set only for a tenant with a target): announce the quota
        marks this request's charge reached, each once per counter and window."""
        found = crossings(plan, answers)
        if not found:
            return
        now = self.clock.now()
        for crossing in found:
            if self._first(f"{crossing.counter.key}|{crossing.mark}", now, float("inf")):
                self.submit(budget_event(admission.tenant, admission.credential, crossing, now))

    def flagged(self, decision: Decision, now: float) -> None:
        """An allowed request marked by a signal: count it, and tell its owner (once per
        ``flag_every`` per key)."""
        if self.metrics is not None:
            self.metrics.flagged.inc()
        if decision.tenant in self.targets and \
                self._first(f"flag|{decision.key_id}", now, self.flag_every):
            self.submit(flagged_event(decision, now))

    def key_changed(self, kind: str, tenant: str, key_id: str, now: float,
                    detail: str = "") -> bool:
        """A key suspended, revoked or reported leaked (``policy.notify`` event names)."""
        return self.submit(key_event(kind, tenant, key_id, now, detail))

    def _first(self, what: str, now: float, every: float) -> bool:
        """True when ``what`` was not announced in the last ``every`` seconds (remembered)."""
        sent = self._sent
        last = sent.get(what)
        if last is not None and now - last < every:
            return False
        if len(sent) >= _REMEMBERED:
            sent.popitem(last=False)
        sent[what] = now
        sent.move_to_end(what)
        return True

    # --- the background side ---------------------------------------------------------------

    def start(self) -> None:
        """Start draining the queue on the running loop. Idempotent."""
        if self._task is None:
            self._slots = asyncio.Semaphore(self._slots_total)
            queued, self._queue = self._queue, asyncio.Queue(self._queue.maxsize)
            while not queued.empty():  # a queue is bound to the loop it first waited on
                self._queue.put_nowait(queued.get_nowait())
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def stop(self) -> None:
        """Stop delivering: what is queued or in flight is dropped (and counted)."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        for task in list(self._deliveries):
            task.cancel()
        await asyncio.gather(*self._deliveries, return_exceptions=True)
        lost = 0
        while not self._queue.empty():
            self._count(self._queue.get_nowait().type, "dropped")
            lost += 1
        if lost:
            log.warning("%d webhooks still queued at shutdown were dropped", lost)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _drain(self) -> None:
        while True:
            found = await self._queue.get()
            await self._slots.acquire()
            task = asyncio.get_running_loop().create_task(self._send(found))
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)

    async def _send(self, found: Event) -> None:
        try:
            target = self.targets.get(found.tenant)  # a reload may have changed or removed it
            if target is None or self._task is None:
                self._count(found.type, "dropped")
                return
            try:
                accepted, _ = await deliver(
                    self._http(), target, found, self.clock, attempts=self.attempts,
                    timeout=self.timeout, base=self.base, cap=self.cap, rng=self.rng)
            except asyncio.CancelledError:
                self._count(found.type, "dropped")
                raise
            except Exception:  # a bug must not end the outbox
                log.exception("webhook %s delivery failed", found.type)
                accepted = False
            self._count(found.type, "delivered" if accepted else "failed")
        finally:
            self._slots.release()

    def _http(self) -> httpx.AsyncClient:
        """The HTTP client, made at the first delivery (a server without targets never
        imports httpx)."""
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(follow_redirects=False, timeout=httpx.Timeout(
                self.timeout, connect=min(1.0, self.timeout)))
        return self._client

    def _count(self, kind: str, result: str) -> None:
        if self.metrics is not None:
            self.metrics.webhooks.labels(kind, result).inc()
