"""``Gatekeeper``: the pure-ASGI middleware. Decides before the app is called; refusals never
reach it.

``__init__`` compiles the runtime (policy, indexes, verifiers, caches); ``__call__`` is a type
guard, a remembered route answer, one header pass, a reused decision record or the pipeline,
then either the app or a prebuilt refusal. The stages themselves live in ``pipeline.py``,
shared with ``replay``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from time import perf_counter
from typing import Any, Final

import anyio

from gatekeeper.admission import admit_plain, admit_request
from gatekeeper.audit import AuditLog
from gatekeeper.audit_stream import audit_stream_for
from gatekeeper.auth import checked_pepper
from gatekeeper.breaker import Breaker
from gatekeeper.clock import Clock, SystemClock
from gatekeeper.decision import FLAG, Decision, is_allowed
from gatekeeper.errors import ConfigError, GatekeeperError
from gatekeeper.metrics import Metrics
from gatekeeper.pipeline import INVALID_TARGET, MISS, evaluate, prepare, route
from gatekeeper.policy.keys import load_pepper
from gatekeeper.policy.load import load_policy
from gatekeeper.policy.model import Policy
from gatekeeper.reasons import Reason
from gatekeeper.reloader import PolicyReloader
from gatekeeper.resale.stage import ResaleMemory
from gatekeeper.responder import PENDING, ClientDisconnected, HeaderSend
from gatekeeper.runtime import Runtime
from gatekeeper.store import DEFAULT_STORE_URL, Store, store_from_url
from gatekeeper.store.counters import CounterStore
from gatekeeper.store.guarded import GuardedCounters
from gatekeeper.store.leased import LeasedCounters
from gatekeeper.store.locations import LocationStore, MemoryLocationStore
from gatekeeper.store.redis_changes import ALL as ALL_KEYS
from gatekeeper.types import ASGIApp, Message, Receive, Scope, Send
from gatekeeper.webhooks import Notifier, resolve_targets
from gatekeeper.workers import declared_workers

log = logging.getLogger("gatekeeper")

SCOPE_KEY: Final = "gatekeeper"
"""Where an allowed request's Decision is left in the scope, for the app to read the tenant."""

_MISS: Final[Any] = MISS
_elapsed: Final = perf_counter
"""Module constants of their own: compiled, an imported name is looked up in the module's
dict at every use, twice each per request."""

PolicySource = Policy | str | os.PathLike[str] | Mapping[str, Any]
Observer = Callable[[Scope, Decision, float], None]
"""Called with (scope, decision, now) for every protected request: recording, tests."""


def _compile(source: PolicySource) -> Policy:
    return source if isinstance(source, Policy) else load_policy(source)


class Gatekeeper:
    def __init__(
        self,
        app: ASGIApp,
        policy: PolicySource,
        *,
        store: Store | str | None = None,
        pepper: bytes | str | None = None,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
        audit: AuditLog | None = None,
        observer: Observer | None = None,
        counters: CounterStore | None = None,
        locations: LocationStore | None = None,
        watch_policy: float | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        """``counters``: where limits count (default: this process's memory); ``locations``:
        impossible travel's last sighting per key (default: in memory); ``watch_policy``:
        seconds between checks of the policy file for changes (a path ``policy`` only; SIGHUP
        and ``reload_policy()`` reload it either way); ``notifier``: the owners' webhook
        outbox (default: ``Notifier`` with its default delivery settings)."""
        self.app = app
        self.locations = MemoryLocationStore() if locations is None else locations
        try:
            compiled = _compile(policy)
            if store is None or isinstance(store, str):
                # a server never creates an empty key store: a missing file is an error
                # naming its absolute path, not 'key_unknown' for every key
                store = store_from_url(store or compiled.store or DEFAULT_STORE_URL,
                                       create=False)
            if counters is None and isinstance(store, CounterStore):
                counters = store  # a store with both capabilities (Redis) counts limits too
            self._pepper = checked_pepper(pepper) if pepper is not None else \
                load_pepper(compiled.keys)
            self.clock = clock or SystemClock()
            self.metrics = metrics or Metrics()
            self.breaker = Breaker(self.clock.monotonic)
            """The key store's circuit breaker; a remote counter store gets its own."""
            if counters is not None and not counters.embedded:
                counters = GuardedCounters(LeasedCounters(counters, self.clock.now),
                                           Breaker(self.clock.monotonic),
                                           compiled.on_store_error,
                                           self.metrics.store_fail_open.set)
            self.audit = audit or AuditLog()
            self.resale = ResaleMemory(compiled, store, self.audit, self.metrics.resale_action,
                                       self.clock.now)
            """The resale score's per-key state, kept across policy reloads."""
            self.notifier = notifier or Notifier(self.metrics, self.clock)
            if self.notifier.metrics is None:
                self.notifier.metrics = self.metrics
            self.notifier.targets = resolve_targets(compiled, os.environ)
            self.runtime = Runtime(compiled, store, self._pepper, self.clock, counters,
                                   self.locations, self.breaker, resale=self.resale,
                                   budget_watch=self.notifier.budgets)
        except GatekeeperError as exc:
            # Under FastAPI's add_middleware this runs at the first ASGI call, where uvicorn's
            # default lifespan mode swallows exceptions: say it where an operator looks.
            log.error("gatekeeper cannot start: %s", exc)
            raise
        self.store = store
        if compiled.audit_stream is not None and self.audit.stream is None:
            self.audit.stream = audit_stream_for(compiled, store, self.metrics)
        self.observer = observer
        self._now = self.clock.now
        self._mono = self.clock.monotonic
        self._started = False
        self._start_lock = anyio.Lock()
        self._flusher: asyncio.Task[None] | None = None
        self._snapshots: asyncio.Task[None] | None = None
        self._follower: asyncio.Task[None] | None = None
        self.metrics.policy_loaded(compiled, self.clock.now())
        self.reloader: PolicyReloader | None = None
        if isinstance(policy, str | os.PathLike):
            self.reloader = PolicyReloader(self, Path(policy), watch_policy)
        elif watch_policy is not None:
            raise ConfigError("watch_policy", watch_policy, "needs the policy as a file path")

    @property
    def policy(self) -> Policy:
        return self.runtime.policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self._other(scope, receive, send)
            return
        if not self._started:
            await self._start_lazily()
        rt = self.runtime  # read once: a reload never mixes two policies in one request
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        below = rt.route_memo.get((root, path) if root else path, _MISS)  # route_key, inlined
        if below is _MISS:
            below = route(rt, path, root)
        if below == "":
            await self.app(scope, receive, send)
            return
        started = _elapsed()
        now, mono = self._now(), self._mono()
        facts = admission = charge = responder = None
        if below is None:
            decision = INVALID_TARGET
        else:
            peer = scope.get("client")
            record, scan, key = prepare(rt, scope["headers"], peer, below, now, mono)
            if record is None:
                decision, facts, admission = await evaluate(
                    rt, scan, key, scope.get("method", "GET"), path, below, peer, now, mono)
                if decision.action == FLAG:  # once per record, not per request it serves
                    self.audit.flagged(decision, facts, now, scope)
                    self.notifier.flagged(decision, now)
            else:
                decision, admission = record.decision, record.admission
            if admission is not None:
                if rt.counters.embedded and not (admission.reads_body and kind == "http"):
                    decision, responder, charge = admit_plain(
                        rt.counters, self.clock, admission, decision, receive, send, now,
                        kind == "http")
                else:
                    try:
                        decision, responder, charge = await admit_request(
                            rt.counters, self.clock, admission, decision, scope, receive,
                            send, scan, now)
                    except ClientDisconnected:
                        return  # gone while sending its body: nothing charged or answered
            if rt.resale is not None and decision.principal is not None:
                scored = rt.resale.run(decision, facts, scan, key, scope, below, now, charge)
                if scored is not decision:
                    decision, admission = scored, None  # its headers are no longer the limits'
                    if responder is not None:  # the score's header too
                        responder.arm(decision.headers,
                                      None if charge is None else charge.settle)
        self.metrics.record(decision.reason, _elapsed() - started)
        if self.observer is not None:
            self.observer(scope, decision, now)
        if is_allowed(decision):
            scope[SCOPE_KEY] = decision
            if kind != "http":
                try:
                    await self.app(scope, receive, send)
                finally:
                    if charge is not None:  # a websocket holds its slot until it closes
                        charge.settle(None)  # never awaited: memory settles, Redis queues
            elif responder is not None:  # Responder.run, inlined: one coroutine fewer
                error: BaseException | None = None
                try:
                    await self.app(scope, responder.receive, responder.send)
                except BaseException as exc:
                    error = exc  # no await in here (compiled: see Responder.run)
                if error is not None or responder.outcome == PENDING:
                    await responder.ended(error)
            elif decision.headers:  # only then is send wrapped
                await self.app(scope, receive, HeaderSend(
                    send, decision.headers, None if admission is None else admission.report.names))
            else:
                await self.app(scope, receive, send)
            return
        self.audit.refused(decision, facts, now, scope)
        answer = rt.policy.answers.get(decision.reason, decision.reason)
        if kind == "http":
            await send_refusal(answer, send, decision.headers)
        else:
            await _refuse_websocket(answer, scope, receive, send)

    # --- lifecycle -----------------------------------------------------------------------

    async def startup(self) -> None:
        """Open the store and say what it holds. Runs at ASGI lifespan startup, or lazily on
        the first request for an app without lifespan support. Idempotent."""
        if self._started:
            return
        async with self._start_lock:
            if self._started:
                return
            await self.store.connect()
            count = len(await self.store.list_keys())
            log.info("policy %s (%d tenants), key store %s holds %d keys",
                     self.policy.source, len(self.policy.tenants), self.store.safe_url, count)
            workers = declared_workers(sys.argv, os.environ)
            if workers > 1 and self.runtime.counters.embedded:
                log.warning("%d worker processes each count limits alone in their own memory, "
                            "so every limit is multiplied by %d; shared limits need the Redis "
                            "store (README 'Limits')", workers, workers)
            self.audit.start()
            self.notifier.start()
            if not self.audit.logger.hasHandlers():
                log.warning("the %s logger has no handler, so refusals are not "
                            "recorded anywhere; see README 'Metrics and audit'",
                            self.audit.logger.name)
            if self.reloader is not None:
                self.reloader.start()
            changes = getattr(self.store, "key_changes", None)
            if changes is not None and self._follower is None:
                self._follower = asyncio.get_running_loop().create_task(
                    self._follow_key_changes(changes()))
            if self.metrics.shared is not None and self._flusher is None:
                self._flusher = asyncio.get_running_loop().create_task(self.metrics.shared.run())
            if self._snapshots is None:  # resale score snapshots for `gatekeeper inspect`
                self._snapshots = asyncio.get_running_loop().create_task(self.resale.run())
            self._started = True

    async def _follow_key_changes(self, changes: AsyncIterator[str]) -> None:
        """A store that announces key changes (Redis): a revoke, suspend or limit change made
        anywhere is applied here at once, not after ``keys.cache_ttl``. ``ALL`` (after a
        reconnection: notices may have been lost) forgets every cached key."""
        async for key_id in changes:
            rt = self.runtime
            rt.authenticator.forget(None if key_id == ALL_KEYS else key_id)
            rt.decisions.clear()

    async def reload_policy(self) -> bool:
        """Re-read the policy file and swap it in; False when it does not load (logged, and
        the running policy stays)."""
        if self.reloader is None:
            raise ConfigError("policy", "(not a file)", "reload_policy needs a policy file path")
        return await self.reloader.reload()

    async def _start_lazily(self) -> None:
        """For an app without lifespan support: a failed start is logged, and requests then
        follow the store's own failure rule (fail closed) instead of crashing."""
        try:
            await self.startup()
        except Exception as exc:
            log.error("start failed, refusing what needs the store: %s", exc)
            self._started = True

    async def shutdown(self) -> None:
        self.audit.stop()
        await self.audit.close_stream()
        await self.notifier.stop()
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
            self._follower = None
        if self.reloader is not None:
            await self.reloader.stop()
        if self._snapshots is not None:
            self._snapshots.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._snapshots
            self._snapshots = None
            await self.resale.flush()
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
            assert self.metrics.shared is not None
            self.metrics.shared.process_ended()
        await self.runtime.authenticator.aclose()
        await self.locations.close()
        counters: object = self.runtime.counters
        if isinstance(counters, GuardedCounters):
            counters = counters.store
        if isinstance(counters, LeasedCounters):
            await counters.stop()  # hands unused slices back while the store still answers
            counters = counters.store
        await self.store.close()
        if counters is not self.store:  # one object with both capabilities closes once
            await self.runtime.counters.close()
        self._started = False

    async def aclose(self) -> None:
        await self.shutdown()

    def reload(self, policy: PolicySource) -> Runtime:
        """Compile ``policy`` fully, then swap it in with one assignment. The store and the
        pepper are fixed for the process: a policy that changes them is refused (and counted
        in ``gatekeeper_policy_reload_errors_total``, the running policy staying)."""
        try:
            compiled = _compile(policy)
            current = self.runtime.policy
            if compiled.store != current.store:
                raise ConfigError("store", "(changed)", "cannot change on reload; restart instead")
            if compiled.audit_stream != current.audit_stream:
                raise ConfigError("audit.redis_stream", "(changed)",
                                  "cannot change on reload; restart instead")
            if compiled.keys.pepper_env != current.keys.pepper_env or \
                    compiled.keys.pepper_file != current.keys.pepper_file:
                raise ConfigError("keys.pepper_env", "(changed)",
                                  "the pepper cannot change on reload; restart instead")
            targets = resolve_targets(compiled, os.environ)
            runtime = Runtime(compiled, self.store, self._pepper, self.clock,
                              self.runtime.counters, self.locations, self.breaker,
                              resale=self.resale, budget_watch=self.notifier.budgets)
            if isinstance(runtime.counters, GuardedCounters):
                runtime.counters.mode = compiled.on_store_error
        except GatekeeperError:
            self.metrics.policy_reload_failed()
            raise
        self.runtime = runtime
        self.notifier.targets = targets
        self.metrics.policy_reloaded(compiled, self.clock.now())
        return runtime

    async def _other(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        # An ASGI scope type this version does not know could carry anything: fail closed.
        log.error("refusing an ASGI %r scope it does not know", str(scope["type"]))

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def lifespan_receive() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    # startup.failed makes the server exit instead of serving a broken gate
                    log.error("gatekeeper cannot start: %s", exc)
                    await send({"type": "lifespan.startup.failed",
                                "message": f"gatekeeper cannot start: {exc}"})
                    raise exc  # named: compiled, a bare raise after an await is not this one
            return message

        async def lifespan_send(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                await self.shutdown()
            await send(message)

        await self.app(scope, lifespan_receive, lifespan_send)


async def send_refusal(reason: Reason, send: Send,
                       headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    await send({"type": "http.response.start", "status": reason.status,
                "headers": [*reason.headers, *headers]})
    await send({"type": "http.response.body", "body": reason.body})


async def _refuse_websocket(reason: Reason, scope: Scope, receive: Receive, send: Send) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        # The server can answer the handshake with a real HTTP response: send the same body.
        await send({"type": "websocket.http.response.start", "status": reason.status,
                    "headers": list(reason.headers)})
        await send({"type": "websocket.http.response.body", "body": reason.body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": reason.code})
