"""What every fuzz test shares: bounded, reproducible settings; one gatekeeper in front of a
recording app; the properties every answer must have.

The rig runs each case on one event loop (hypothesis calls a plain function per example), and
its app records what reached it: a refused request must never be there.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, settings

from gatekeeper import Gatekeeper, MemoryStore, compile_policy, key_admin
from gatekeeper.decision import Decision
from gatekeeper.principal import KeyStatus
from gatekeeper.reasons import AUTH_UNAVAILABLE, INTERNAL_ERROR, REFUSALS, STORE_UNAVAILABLE
from gatekeeper.types import Message, Receive, Scope, Send
from tests.conftest import PEPPER

FUZZ = settings(derandomize=True, database=None, deadline=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.large_base_example])
"""Reproducible (no random seed, no example database) and bounded by each test's
``max_examples``; set GATEKEEPER_FUZZ_SCALE=10 for a longer run by hand."""
SCALE = max(1, int(os.environ.get("GATEKEEPER_FUZZ_SCALE", "1")))


def examples(n: int) -> settings:
    return settings(FUZZ, max_examples=n * SCALE)


JWT_SECRET = "fuzz-jwt-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
JWT_ISSUER = "https://sso.fuzz.test/"
NETWORKS = ["192.0.2.0/24", "10.0.0.0/8", "2001:db8::/32", "127.0.0.0/8"]

POLICY: dict[str, Any] = {
    "routes": {"protect": ["/v1/*", "/t/*"], "public": ["/healthz"]},
    "client_address": {"trusted_proxies": ["10.0.0.0/8", "2001:db8:f::/48"]},
    "request_tenant": {"header": "x-tenant-id"},
    "geo": {"cdn_header": "cf-ipcountry"},
    "jwt": {"issuers": {"corp": {"issuer": JWT_ISSUER, "audiences": ["gatekeeper"],
                                 "algorithms": ["HS256"], "secret_env": "FUZZ_JWT_SECRET"}}},
    "tenants": {
        "acme": {"allowed_networks": NETWORKS},
        "metered": {
            "allowed_networks": NETWORKS,
            "limits": {"requests": "1000000/minute", "tokens": "100000000/minute",
                       "concurrency": 64, "per_client": {"requests": "1000000/minute"}},
            "request": {"models": ["gpt-4o-mini*", "text-embedding-3-*"], "max_tokens": 4096,
                        "max_n": 2, "forbidden_fields": ["logit_bias", "tools"],
                        "max_body_bytes": 65536, "ask_usage": True}},
        "tokens": {"limits": {"tokens": "100000000/minute"}},
        "travellers": {"countries": {"allow": ["US", "DE", "GB"], "unknown": "deny"},
                       "travel": {"max_kmh": 900, "action": "deny"}},
        "initech": {"disabled": True},
    },
}

DOCUMENTED_503 = {STORE_UNAVAILABLE.code, AUTH_UNAVAILABLE.code}
"""The only 5xx gatekeeper may answer: a dependency it needs did not answer."""
WIRE_CODES = {r.wire_code or r.code for r in REFUSALS}
STATUSES = {r.status for r in REFUSALS}
ERROR_FIELDS = {"message", "type", "param", "code"}


@dataclass
class Outcome:
    sent: list[Message]
    reached_app: bool
    decision: Decision | None

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent[1:])


class RecordingApp:
    """A real ASGI app: reads the whole body (so a replayed body is exercised), answers 200
    and counts every request that reached it."""

    def __init__(self) -> None:
        self.reached = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.reached += 1
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 1000})
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"reached the app"})


@dataclass
class Rig:
    runner: asyncio.Runner
    gk: Gatekeeper
    app: RecordingApp
    keys: dict[str, str] = field(default_factory=dict)
    decisions: list[Decision] = field(default_factory=list)
    cases: int = 0

    def request(self, method: str, path: str, headers: Sequence[tuple[bytes, bytes]], *,
                client: Any = ("192.0.2.10", 40000), chunks: Sequence[bytes] = (b"",),
                root_path: str = "") -> Outcome:
        """One raw ASGI request as a server would build it (any bytes in any header)."""
        return self.runner.run(self._request(method, path, headers, client, chunks, root_path))

    async def _request(self, method: str, path: str, headers: Sequence[tuple[bytes, bytes]],
                       client: Any, chunks: Sequence[bytes], root_path: str) -> Outcome:
        self.cases += 1
        sent: list[Message] = []
        pending = list(chunks) or [b""]

        async def receive() -> Message:
            if pending:
                body = pending.pop(0)
                return {"type": "http.request", "body": body, "more_body": bool(pending)}
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": method, "scheme": "http", "path": path,
                 "raw_path": path.encode("utf-8", "surrogateescape"), "query_string": b"",
                 "root_path": root_path, "headers": list(headers), "client": client,
                 "server": ("api.test", 80)}
        before, self.decisions[:] = self.app.reached, []
        await self.gk(scope, receive, send)
        decision = self.decisions[-1] if self.decisions else None
        return Outcome(sent, self.app.reached > before, decision)


    def websocket(self, path: str, headers: Sequence[tuple[bytes, bytes]], *,
                  client: Any = ("192.0.2.10", 40000), http_response: bool = False) -> Outcome:
        """One websocket handshake; ``http_response``: the server offers the extension that
        lets a refusal be a real HTTP answer."""
        return self.runner.run(self._websocket(path, headers, client, http_response))

    async def _websocket(self, path: str, headers: Sequence[tuple[bytes, bytes]], client: Any,
                         http_response: bool) -> Outcome:
        self.cases += 1
        sent: list[Message] = []
        messages = [{"type": "websocket.connect"}]

        async def receive() -> Message:
            return messages.pop(0) if messages else {"type": "websocket.disconnect",
                                                       "code": 1000}

        async def send(message: Message) -> None:
            sent.append(message)

        scope = {"type": "websocket", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "scheme": "ws", "path": path, "raw_path": path.encode("utf-8", "surrogateescape"),
                 "query_string": b"", "root_path": "", "headers": list(headers), "client": client,
                 "server": ("api.test", 80), "subprotocols": [],
                 "extensions": {"websocket.http.response": {}} if http_response else {}}
        before, self.decisions[:] = self.app.reached, []
        await self.gk(scope, receive, send)
        decision = self.decisions[-1] if self.decisions else None
        return Outcome(sent, self.app.reached > before, decision)


@contextmanager
def rig(policy: dict[str, Any] | None = None) -> Iterator[Rig]:
    """A gatekeeper over a memory store with keys of every kind issued, on its own loop."""
    os.environ["FUZZ_JWT_SECRET"] = JWT_SECRET
    with asyncio.Runner() as runner:
        compiled = compile_policy(policy or POLICY)
        store, app = MemoryStore(), RecordingApp()
        made = Rig(runner, None, app)  # type: ignore[arg-type]
        made.gk = Gatekeeper(app, compiled, store=store, pepper=PEPPER,
                             observer=lambda scope, decision, now: made.decisions.append(decision))
        now = time.time()

        async def issue(name: str, tenant: str, **kwargs: Any) -> str:
            key, record = await key_admin.create_key(store, PEPPER, compiled, tenant, now,
                                                     **kwargs)
            made.keys[name] = key
            return record.key_id

        async def issue_all() -> None:
            for tenant in ("acme", "metered", "tokens", "travellers", "initech"):
                await issue(tenant, tenant)
            await issue("narrow", "acme", networks=["192.0.2.0/28"])
            await issue("german", "acme", countries=["DE"])
            revoked = await issue("revoked", "acme")
            await key_admin.set_status(store, revoked, KeyStatus.REVOKED, now)
            suspended = await issue("suspended", "metered")
            await key_admin.set_status(store, suspended, KeyStatus.SUSPENDED, now)

        runner.run(issue_all())
        try:
            yield made
        finally:
            runner.run(made.gk.aclose())
            del os.environ["FUZZ_JWT_SECRET"]


def check_websocket(outcome: Outcome, context: object = "") -> None:
    """A refused handshake never reaches the app: it is closed with 1008 and the reason's code,
    or (when the server can) answered with the same HTTP refusal an HTTP request gets."""
    decision = outcome.decision
    assert decision is None or decision.reason is not INTERNAL_ERROR, (decision, context)
    if outcome.reached_app:
        assert decision is None or decision.allowed, (decision, context)
        assert [m["type"] for m in outcome.sent] == ["websocket.accept", "websocket.close"]
        return
    assert decision is not None and not decision.allowed, (decision, context)
    first = outcome.sent[0]
    if first["type"] == "websocket.close":
        assert first["code"] == 1008 and first["reason"] == decision.reason.code, context
        return
    assert first["type"] == "websocket.http.response.start", (first, context)
    assert first["status"] == decision.reason.status, context
    error = json.loads(b"".join(m.get("body", b"") for m in outcome.sent[1:]))["error"]
    assert set(error) == ERROR_FIELDS and error["code"] in WIRE_CODES, (error, context)


def check(outcome: Outcome, context: object = "") -> None:
    """The properties every answer has, whatever was sent: an answer at all; a refused
    request never reaches the app; every refusal is OpenAI's error shape with a code from
    gatekeeper.reasons; no 5xx but the documented 503s; never a failure while deciding."""
    assert outcome.sent, f"no answer at all: {context}"
    assert outcome.sent[0]["type"] == "http.response.start", context
    decision = outcome.decision
    assert decision is None or decision.reason is not INTERNAL_ERROR, \
        f"gatekeeper failed while deciding ({decision.detail}): {context}"
    if outcome.reached_app:
        assert decision is None or decision.allowed, (decision, context)
        assert outcome.status == 200 and outcome.body == b"reached the app", context
        return
    assert decision is not None and not decision.allowed, (decision, context)
    assert outcome.status == decision.reason.status, (outcome.status, decision, context)
    assert outcome.status in STATUSES, context
    error = json.loads(outcome.body)["error"]
    assert set(error) == ERROR_FIELDS and error["code"] in WIRE_CODES, (error, context)
    assert error["type"] and error["message"] and "Traceback" not in error["message"]
    if outcome.status >= 500:
        assert outcome.status == 503 and error["code"] in DOCUMENTED_503, (error, context)
