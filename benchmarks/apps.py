"""The apps every scenario wraps, and the request they receive. No gatekeeper import here:
``workload.py`` imports this module before it puts another checkout's gatekeeper first on
``sys.path``.

- ``make_app``: the tiny Starlette app (``POST /v1/chat/completions`` returns a small
  JSONResponse, ``GET /healthz`` returns ``{"status": "ok"}``), optionally with slowapi as its
  README sets it up for Starlette.
- ``TrivialApp``: the do-nothing inner app (200, empty body). Against it, what a middleware
  costs is not hidden in the noise of a framework's own 12-20 us.
- ``PassThrough``: a do-nothing pure-ASGI middleware, the floor for any middleware.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from slowapi import Limiter, _rate_limit_exceeded_handler
from slowapi.errors import RateLimitExceeded
from slowapi.util import get_remote_address
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PEPPER = b"benchmark-pepper-0123456789-abcdefghijklmnop"
JWT_SECRET_ENV = "BENCH_JWT_SECRET"
JWT_SECRET = "benchmark-hs256-secret-0123456789-abcdefghijklmnop"  # >= 32 bytes
JWT_ISSUER = "https://idp.bench.example"
JWT_AUDIENCE = "gatekeeper-bench"
SLOWAPI_LIMIT = "1000000/minute"
CHAT_PATH = "/v1/chat/completions"

TENANT = "acme"
KEY_NETWORKS = ["192.0.2.0/28"]
CLIENT = ("192.0.2.10", 40000)
"""Inside the tenant's 192.0.2.0/24 and the key's 192.0.2.0/28."""
WRONG_CLIENT = ("192.0.2.200", 40000)
"""Inside the tenant's network, outside the key's: every network check runs, the last fails."""

ROUTES: dict[str, Any] = {"protect": ["/v1/*"], "public": ["/healthz"]}
TENANTS: dict[str, Any] = {TENANT: {"allowed_networks": ["192.0.2.0/24", "2001:db8::/32"]}}
POLICY: dict[str, Any] = {
    "routes": ROUTES,
    "tenants": TENANTS,
    "jwt": {"issuers": {"corp": {
        "issuer": JWT_ISSUER, "audiences": [JWT_AUDIENCE], "algorithms": ["HS256"],
        "secret_env": JWT_SECRET_ENV,
    }}},
}
"""hot_path.py's policy (its JWT issuer reads the secret from ``BENCH_JWT_SECRET``)."""

CHAT_BODY = (b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],'
             b'"max_tokens":16}')
CHAT_REPLY: dict[str, Any] = {
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000,
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "hello"}}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


@dataclass
class Calls:
    """How many times an app's endpoints ran: refusals must leave it at zero."""

    count: int = 0


HIGH = "1000000000/minute"
"""Limits that always have room, so every timed request is charged and allowed."""
LIMITS_RT = {"requests": HIGH, "tokens": HIGH}
LIMITS_RTC = {**LIMITS_RT, "concurrency": 64}
LIMITS_LEASE = {**LIMITS_RTC, "lease": {"requests": 100, "tokens": 200_000, "concurrency": 64}}
"""LIMITS_RTC in lease mode (Redis): a top-up every 50 requests, concurrency per replica."""
LIMITS_FULL = {**LIMITS_RTC, "per_tenant": LIMITS_RT}
"""Request, token and concurrency limits per key, and request and token limits per tenant."""

COUNTRY_RULE: dict[str, Any] = {"allow": ["DE", "FR", "US"], "unknown": "allow"}
"""The benchmark tenant's country rule: the client (documentation space) is in no country,
so ``unknown: allow`` lets it through after the same cached lookup a known address gets."""


FULL_TENANT: dict[str, Any] = {
    "countries": COUNTRY_RULE,
    "request": {"models": ["gpt-4o*", "o3-mini"], "max_tokens": 4096},
    "limits": LIMITS_FULL,
}
FULL_TOP: dict[str, Any] = {"resale": {"mode": "shadow"}}
"""The full policy (issue #18): key, tenant and network binding (``POLICY``), a country rule,
the request policy on the model, request/token/concurrency limits on key and tenant, and the
resale score. In ``shadow`` the score computes and logs everything and changes no answer, so
a benchmark's one key sending thousands of requests a second is not throttled by it."""



def make_app(calls: Calls, limiter: Limiter | None = None, limit: str = SLOWAPI_LIMIT) -> Starlette:
    async def chat_completions(request: Request) -> JSONResponse:
        calls.count += 1
        return JSONResponse(CHAT_REPLY)

    async def healthz(request: Request) -> JSONResponse:
        calls.count += 1
        return JSONResponse({"status": "ok"})

    handlers: dict[Any, Any] = {}
    if limiter is not None:
        # slowapi's documented Starlette setup: the decorator on an endpoint that takes
        # `request`, the limiter on app.state, the RateLimitExceeded handler. (Starlette 1.x
        # has no add_exception_handler, so the handler goes to the constructor.)
        chat_completions = limiter.limit(limit)(chat_completions)
        handlers[RateLimitExceeded] = _rate_limit_exceeded_handler
    app = Starlette(routes=[
        Route(CHAT_PATH, chat_completions, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ], exception_handlers=handlers)
    if limiter is not None:
        app.state.limiter = limiter
    return app


def make_slowapi_app(calls: Calls, limit: str = SLOWAPI_LIMIT, headers: bool = False) -> Starlette:
    """slowapi over the Starlette app: one in-memory limit keyed by the remote address;
    ``headers``: with its rate-limit headers (``headers_enabled``), as gatekeeper sends its."""
    return make_app(calls, Limiter(key_func=get_remote_address, headers_enabled=headers), limit)


class TrivialApp:
    """The do-nothing inner app: counts the call, sends 200 with an empty body."""

    __slots__ = ("calls",)

    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls.count += 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})


class PassThrough:
    """A do-nothing pure-ASGI middleware: the floor for any middleware."""

    __slots__ = ("app",)

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def make_headers(authorization: str | None) -> list[tuple[bytes, bytes]]:
    """What the OpenAI Python client sends, plus ``authorization`` when given: six headers."""
    headers = [
        (b"host", b"api.bench.example"),
        (b"user-agent", b"OpenAI/Python 1.40.0"),
        (b"accept", b"application/json"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(CHAT_BODY)).encode()),
    ]
    if authorization is not None:
        headers.append((b"authorization", f"Bearer {authorization}".encode()))
    return headers


def make_scope(method: str, path: str, client: tuple[str, int],
               authorization: str | None) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
        "headers": make_headers(authorization), "client": client,
        "server": ("api.bench.example", 80),
    }
