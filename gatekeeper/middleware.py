"""``Gatekeeper``: the pure-ASGI middleware. Decides before the app is called; refusals never
reach it.

``__init__`` does all the work that can be done once (policy, indexes, store, pepper, metric
children); ``__call__`` is a type guard, a route check, one header pass, a cached credential
lookup and the pure ``decide``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from time import perf_counter
from typing import Any

from gatekeeper import reasons
from gatekeeper.audit import AuditLog
from gatekeeper.auth import Authenticator
from gatekeeper.clock import Clock, SystemClock
from gatekeeper.decision import Decision, decide
from gatekeeper.facts import FactReader, RequestFacts
from gatekeeper.jwt_verifier import JwtVerifier
from gatekeeper.metrics import Metrics
from gatekeeper.policy.load import load_pepper, load_policy
from gatekeeper.policy.model import Policy
from gatekeeper.reasons import OK, Reason
from gatekeeper.routes import route_path
from gatekeeper.store import DEFAULT_STORE_URL, Store, store_from_url
from gatekeeper.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("gatekeeper")

SCOPE_KEY = "gatekeeper"
"""Where an allowed request's Decision is left in the scope, for the app to read the tenant."""


class Gatekeeper:
    def __init__(
        self,
        app: ASGIApp,
        policy: Policy | str | os.PathLike[str] | Mapping[str, Any],
        *,
        store: Store | str | None = None,
        pepper: bytes | None = None,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self.app = app
        self.policy = policy if isinstance(policy, Policy) else load_policy(policy)
        if store is None or isinstance(store, str):
            store = store_from_url(store or self.policy.store or DEFAULT_STORE_URL)
        self.store = store
        self.clock = clock or SystemClock()
        self.metrics = metrics or Metrics()
        self.audit = audit or AuditLog()
        self.authenticator = Authenticator(
            store, pepper if pepper is not None else load_pepper(self.policy.keys),
            cache_ttl=self.policy.keys.cache_ttl, clock=self.clock,
            verifier=JwtVerifier(self.policy.issuers, clock=self.clock)
            if self.policy.issuers else None)
        self._reader = FactReader(self.policy)
        self._routes = self.policy.routes
        self.metrics.policy_tenants.set(len(self.policy.tenants))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        path, below = scope["path"], route_path(scope)
        routes = self._routes
        if not (routes.is_protected(below) or (below is not path and routes.is_protected(path))):
            await self.app(scope, receive, send)
            return
        started = perf_counter()
        now = self.clock.now()
        facts: RequestFacts | None = None
        try:
            facts = self._reader.read(scope, below)
            auth = None
            if facts.problem is None and facts.credential is not None:
                auth = await self.authenticator.authenticate(facts.credential, now)
            decision = decide(facts, auth, self.policy, now)
        except Exception:
            log.exception("gatekeeper failed to decide; refusing (fail closed)")
            decision = Decision(reasons.INTERNAL_ERROR, detail="exception while deciding")
        self.metrics.record(decision.reason, perf_counter() - started)
        if decision.reason is OK:
            scope[SCOPE_KEY] = decision
            await self.app(scope, receive, send)
            return
        self.audit.refused(decision, facts, now)
        if kind == "http":
            await send_refusal(decision.reason, send)
        else:
            await _refuse_websocket(decision.reason, scope, receive, send)

    async def aclose(self) -> None:
        await self.store.close()


async def send_refusal(reason: Reason, send: Send) -> None:
    await send({"type": "http.response.start", "status": reason.status,
                "headers": list(reason.headers)})
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
