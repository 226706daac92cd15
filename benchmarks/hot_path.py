"""What each setup costs per request, driven in process by a hand-written ASGI loop.

    python benchmarks/hot_path.py [--quick] [--rounds N] [--requests N] [--output PATH]

Every scenario wraps the same tiny Starlette app (``POST /v1/chat/completions`` returning a
small JSONResponse, plus ``GET /healthz``). A scenario's ASGI scope is built once; each request
gets a shallow copy of it (a server hands every request a fresh scope, and Starlette and slowapi
write into it), a ``receive`` that returns one ``http.request`` message and a ``send`` that
discards. The app is awaited N times in a loop inside one asyncio event loop and timed with
``time.perf_counter_ns``; no HTTP client is involved.

Scenarios are interleaved round-robin (the starting scenario rotates each round) so that drift
hits all of them alike; each is checked (status, reason code, app call counter) before and
after timing, and any surprise exits non-zero. Without ``--quick`` the table is written to
``benchmarks/RESULTS.md`` (or ``--output``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import jwt
from slowapi import Limiter, _rate_limit_exceeded_handler
from slowapi.errors import RateLimitExceeded
from slowapi.util import get_remote_address
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import gatekeeper
from gatekeeper import key_admin

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HERE = Path(__file__).resolve().parent
DEFAULT_OUTPUT = HERE / "RESULTS.md"
DEFAULT_ROUNDS, DEFAULT_REQUESTS = 7, 20_000
QUICK_ROUNDS, QUICK_REQUESTS = 3, 500

PEPPER = b"benchmark-pepper-0123456789-abcdefghijklmnop"
JWT_SECRET_ENV = "BENCH_JWT_SECRET"
JWT_SECRET = "benchmark-hs256-secret-0123456789-abcdefghijklmnop"  # >= 32 bytes
JWT_ISSUER = "https://idp.bench.example"
JWT_AUDIENCE = "gatekeeper-bench"
SLOWAPI_LIMIT = "1000000/minute"

CLIENT = ("192.0.2.10", 40000)
"""Inside the tenant's 192.0.2.0/24 and the key's 192.0.2.0/28."""
WRONG_CLIENT = ("192.0.2.200", 40000)
"""Inside the tenant's network, outside the key's: every network check runs, the last fails."""
GARBAGE_KEY = "gk_" + "A" * 50
FORGED_KEY = gatekeeper.build_key("ZZZZZZZZZZZZ", "f" * 32)
"""A valid checksum (anyone can compute one) on a key id the store does not hold."""
"""The shape of a key (prefix, length, alphabet) with a checksum that fails."""

POLICY: dict[str, Any] = {
    "routes": {"protect": ["/v1/*"], "public": ["/healthz"]},
    "tenants": {"acme": {"allowed_networks": ["192.0.2.0/24", "2001:db8::/32"]}},
    "jwt": {"issuers": {"corp": {
        "issuer": JWT_ISSUER, "audiences": [JWT_AUDIENCE], "algorithms": ["HS256"],
        "secret_env": JWT_SECRET_ENV,
    }}},
}

CHAT_BODY = (b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],'
             b'"max_tokens":16}')
CHAT_REPLY: dict[str, Any] = {
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000,
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "hello"}}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


# --- the app, the driver ---------------------------------------------------------------------


@dataclass
class Calls:
    """How many times the app's endpoints ran: refusals must leave it at zero."""

    count: int = 0


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
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ], exception_handlers=handlers)
    if limiter is not None:
        app.state.limiter = limiter
    return app


class PassThrough:
    """A do-nothing pure-ASGI middleware: the floor for any middleware."""

    __slots__ = ("app",)

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def make_scope(method: str, path: str, client: tuple[str, int],
               authorization: str | None) -> dict[str, Any]:
    headers = [
        (b"host", b"api.bench.example"),
        (b"user-agent", b"OpenAI/Python 1.40.0"),
        (b"accept", b"application/json"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(CHAT_BODY)).encode()),
    ]
    if authorization is not None:
        headers.append((b"authorization", f"Bearer {authorization}".encode()))
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
        "headers": headers, "client": client, "server": ("api.bench.example", 80),
    }


_REQUEST: Message = {"type": "http.request", "body": CHAT_BODY, "more_body": False}


async def receive() -> Message:
    return _REQUEST


async def discard(message: Message) -> None:
    return None


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
    return starts[0]["status"], body


class CheckFailed(Exception):
    pass


# --- scenarios -------------------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    what: str
    app: ASGIApp
    scope: dict[str, Any]
    status: int
    calls: Calls
    reason: str | None = None
    """The refusal code the body must carry; None for allowed requests."""
    gk: gatekeeper.Gatekeeper | None = None
    reference: bool = False
    """A reference row, not one of the compared setups."""
    us: list[float] = field(default_factory=list)
    requests: int = 0
    """Requests sent to this scenario in total (probes, warm-up and timing)."""
    notes: list[str] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return self.status < 400


async def gatekeeper_scenario(name: str, what: str, *, path: str = "/v1/chat/completions",
                              method: str = "POST", client: tuple[str, int] = CLIENT,
                              credential: str | None = "key", status: int = 200,
                              reason: str | None = None, audit: bool = False) -> Scenario:
    policy = gatekeeper.compile_policy(POLICY, "benchmark policy")
    store = gatekeeper.MemoryStore()
    calls = Calls()
    gk = gatekeeper.Gatekeeper(make_app(calls), policy, store=store, pepper=PEPPER,
                               audit=gatekeeper.AuditLog(audit_sink()) if audit else None)
    now = time.time()
    if credential == "key":
        token, _ = await key_admin.create_key(store, PEPPER, policy, "acme", now,
                                              networks=["192.0.2.0/28"])
    elif credential == "jwt":
        token = jwt.encode({"iss": JWT_ISSUER, "aud": JWT_AUDIENCE, "sub": "bench-user",
                            "tenant": "acme", "iat": int(now), "exp": int(now) + 86_400},
                           JWT_SECRET, algorithm="HS256")
    else:
        token = credential
    return Scenario(name, what, gk, make_scope(method, path, client, token), status, calls,
                    reason, gk)


def audit_sink() -> logging.Logger:
    """An INFO logger that formats each audit line and drops it: the cost, without the I/O."""
    logger = logging.getLogger("benchmark.audit")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    return logger


async def build_scenarios() -> list[Scenario]:
    bare_calls, noop_calls, slow_calls, ref_calls = Calls(), Calls(), Calls(), Calls()
    valid = "a valid key from the key's network"
    return [
        Scenario("bare", "bare Starlette app, POST /v1/chat/completions",
                 make_app(bare_calls), make_scope("POST", "/v1/chat/completions", CLIENT, None),
                 200, bare_calls),
        Scenario("noop-middleware", "the app behind a do-nothing pure-ASGI middleware",
                 PassThrough(make_app(noop_calls)),
                 make_scope("POST", "/v1/chat/completions", CLIENT, None), 200, noop_calls),
        Scenario("slowapi", f"slowapi decorator, one in-memory limit ({SLOWAPI_LIMIT}) "
                 "keyed by remote address",
                 make_app(slow_calls, Limiter(key_func=get_remote_address)),
                 make_scope("POST", "/v1/chat/completions", CLIENT, None), 200, slow_calls),
        await gatekeeper_scenario(
            "gk-api-key", f"gatekeeper, {valid} (cached), tenant and key networks checked"),
        await gatekeeper_scenario(
            "gk-jwt", "gatekeeper, a valid HS256 JWT (verified once, then cached)",
            credential="jwt"),
        await gatekeeper_scenario(
            "gk-garbage-key", "gatekeeper refusing a key whose checksum fails (401)",
            credential=GARBAGE_KEY, status=401, reason="credential_malformed"),
        await gatekeeper_scenario(
            "gk-wrong-network", "gatekeeper refusing a valid key from outside its network (403)",
            client=WRONG_CLIENT, status=403, reason="network_not_allowed"),
        await gatekeeper_scenario(
            "gk-forged-key", "gatekeeper refusing a well-formed key with an unknown id (401)",
            credential=FORGED_KEY, status=401, reason="key_unknown"),
        await gatekeeper_scenario(
            "gk-wrong-network-audited", "gk-wrong-network with its audit line written (to a "
            "logging.NullHandler at INFO)", client=WRONG_CLIENT, status=403,
            reason="network_not_allowed", audit=True),
        await gatekeeper_scenario(
            "gk-public-path", "gatekeeper in front of an unprotected path, GET /healthz",
            path="/healthz", method="GET", credential=None),
        Scenario("bare-healthz", "reference: bare app, GET /healthz (compare gk-public-path)",
                 make_app(ref_calls), make_scope("GET", "/healthz", CLIENT, None), 200,
                 ref_calls, reference=True),
    ]


# --- checks ----------------------------------------------------------------------------------


async def check(s: Scenario, when: str) -> None:
    before = s.calls.count
    status, body = await probe(s.app, s.scope)
    s.requests += 1
    if status != s.status:
        raise CheckFailed(f"{s.name} ({when}): status {status}, expected {s.status}: "
                          f"{body[:200]!r}")
    if s.reason is not None and f'"code":"{s.reason}"'.encode() not in body:
        raise CheckFailed(f"{s.name} ({when}): body lacks code {s.reason!r}: {body[:200]!r}")
    if s.calls.count - before != (1 if s.allowed else 0):
        raise CheckFailed(f"{s.name} ({when}): app calls went {before} -> {s.calls.count}")


async def check_slowapi_driver() -> str:
    """The driver really exercises slowapi: a 3/minute limit refuses the 4th request."""
    calls = Calls()
    app = make_app(calls, Limiter(key_func=get_remote_address), limit="3/minute")
    scope = make_scope("POST", "/v1/chat/completions", CLIENT, None)
    statuses = [(await probe(app, scope))[0] for _ in range(4)]
    if statuses != [200, 200, 200, 429] or calls.count != 3:
        raise CheckFailed(f"slowapi driver check: statuses {statuses}, app calls {calls.count}")
    return "slowapi: under a 3/minute limit the same driver got 200, 200, 200, 429"


def final_checks(scenarios: list[Scenario]) -> list[str]:
    lines = []
    for s in scenarios:
        expected = s.requests if s.allowed else 0
        if s.calls.count != expected:
            raise CheckFailed(f"{s.name}: app called {s.calls.count} times, expected {expected}")
        if s.allowed:
            lines.append(f"{s.name}: {s.requests} requests, all {s.status}, "
                         f"app called {s.calls.count} times")
        else:
            lines.append(f"{s.name}: {s.requests} requests, all {s.status} {s.reason}, "
                         f"app never called (0 calls)")
        if s.gk is not None and s.name != "gk-public-path":
            outcome = "allow" if s.allowed else "refuse"
            value = s.gk.metrics.registry.get_sample_value(
                "gatekeeper_decisions_total", {"outcome": outcome, "reason": s.reason or "ok"})
            if value != s.requests:
                raise CheckFailed(f"{s.name}: metrics counted {value} decisions, "
                                  f"expected {s.requests}")
            lines[-1] += f"; metrics recorded {int(value)} {outcome} decisions"
    jwt_gk = next(s.gk for s in scenarios if s.name == "gk-jwt")
    verifier = jwt_gk.runtime.authenticator._jwt if jwt_gk is not None else None
    if verifier is None or verifier.verifications != 1:
        raise CheckFailed(f"gk-jwt: expected 1 signature verification, got "
                          f"{getattr(verifier, 'verifications', None)}")
    lines.append("gk-jwt: 1 signature verification in total (every later request a cache hit)")
    return lines


# --- run -------------------------------------------------------------------------------------


async def run(rounds: int, requests: int, progress: bool) -> tuple[list[Scenario], list[str]]:
    scenarios = await build_scenarios()
    notes = [await check_slowapi_driver()]
    warmup = min(requests, 1000)
    for s in scenarios:
        await check(s, "first request")  # also fills gatekeeper's credential cache
        await timed(s.app, s.scope, warmup)
        s.requests += warmup
        await check(s, "after warm-up")
    for r in range(rounds):
        shift = r % len(scenarios)
        for s in scenarios[shift:] + scenarios[:shift]:
            gc.collect()
            ns = await timed(s.app, s.scope, requests)
            s.requests += requests
            s.us.append(ns / requests / 1000)
        if progress:
            print(f"round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    for s in scenarios:
        await check(s, "after timing")
    notes += final_checks(scenarios)
    return scenarios, notes


def table(scenarios: list[Scenario]) -> list[str]:
    base = statistics.median(scenarios[0].us)
    rows = ["| # | scenario | median us/req | min | max | x bare | added vs bare (us) |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    number = 0
    for s in scenarios:
        med = statistics.median(s.us)
        label = "ref" if s.reference else str(number := number + 1)
        added = "-" if s is scenarios[0] else f"{med - base:+.2f}"
        rows.append(f"| {label} | {s.name} | {med:.2f} | {min(s.us):.2f} | {max(s.us):.2f} | "
                    f"{med / base:.2f} | {added} |")
    return rows


def machine() -> list[str]:
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "?"

    packages = ", ".join(f"{d} {version(d)}" for d in (
        "starlette", "slowapi", "limits", "PyJWT", "prometheus_client", "gatekeeper"))
    return [
        f"- date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- python: {platform.python_version()} ({platform.python_implementation()})",
        f"- platform: {platform.platform()} ({platform.machine()})",
        f"- cpu count: {os.cpu_count()}",
        f"- packages: {packages}",
    ]


def report(scenarios: list[Scenario], notes: list[str], rounds: int, requests: int,
           command: str) -> str:
    base = statistics.median(scenarios[0].us)
    public = next(s for s in scenarios if s.name == "gk-public-path")
    ref = next(s for s in scenarios if s.name == "bare-healthz")
    pub_med, ref_med = statistics.median(public.us), statistics.median(ref.us)
    lines = [
        "# gatekeeper hot-path benchmark",
        "",
        f"`{command}`: {rounds} rounds x {requests} requests per scenario, scenarios "
        "interleaved round-robin. Microseconds per request; median, min and max are over the "
        f"rounds. `x bare` is the median over the bare app's median ({base:.2f} us); "
        "`added` is the difference of the medians. Absolute numbers depend on the machine: "
        "trust the ratios and differences.",
        "",
        *table(scenarios),
        "",
        f"gk-public-path against its own baseline (bare-healthz, the same GET /healthz without "
        f"gatekeeper): {pub_med - ref_med:+.2f} us ({pub_med / ref_med:.2f}x).",
        "",
        "## Scenarios",
        "",
        *(f"- **{s.name}**: {s.what}" for s in scenarios),
        "",
        "## Checks (run before and after timing; any failure exits non-zero)",
        "",
        *(f"- {n}" for n in notes),
        "",
        "## Method",
        "",
        "- Hand-written ASGI driver in one asyncio event loop: the scope is built once per "
        "scenario and shallow-copied per request (Starlette and slowapi write into it; reusing "
        "one dict would let slowapi skip its check after the first request), `receive` returns "
        "one `http.request` message, `send` discards. No HTTP client, no server, no sockets.",
        "- Each scenario was warmed up (min(requests, 1000) requests) after its first checked "
        "request; `gc.collect()` runs before each timed batch; GC stays enabled while timing.",
        "- Gatekeeper runs with its default `Metrics()` (recording is included), the system "
        "clock and its default `keys.cache_ttl` of 1 s: a cached key is re-read from the memory "
        "store (plus one HMAC) once a second, which is included and negligible per request.",
        "- The `gatekeeper.audit` logger is set to WARNING so refusals print nothing; "
        "`gk-wrong-network-audited` alone builds and logs its audit lines (to a NullHandler).",
        "",
        "## Machine",
        "",
        *machine(),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_ROUNDS} rounds x {QUICK_REQUESTS} requests; print only "
                             "(unless --output is given)")
    parser.add_argument("--rounds", type=int, help=f"rounds (default {DEFAULT_ROUNDS})")
    parser.add_argument("--requests", type=int,
                        help=f"requests per scenario per round (default {DEFAULT_REQUESTS})")
    parser.add_argument("--output", type=Path,
                        help=f"where to write the report (default {DEFAULT_OUTPUT}; "
                             "none with --quick)")
    args = parser.parse_args(argv)
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS)
    requests = args.requests or (QUICK_REQUESTS if args.quick else DEFAULT_REQUESTS)
    if rounds < 1 or requests < 1:
        parser.error("--rounds and --requests must be at least 1")
    output = args.output if args.output is not None else (None if args.quick else DEFAULT_OUTPUT)

    os.environ[JWT_SECRET_ENV] = JWT_SECRET  # read when each Gatekeeper is built
    logging.getLogger("gatekeeper.audit").setLevel(logging.WARNING)
    print("gatekeeper.audit logger silenced (level WARNING): refusals are not logged",
          flush=True)

    try:
        scenarios, notes = asyncio.run(run(rounds, requests, progress=not args.quick))
    except CheckFailed as exc:
        print(f"CHECK FAILED: {exc}", file=sys.stderr)
        return 1
    command = "python benchmarks/hot_path.py" + (" --quick" if args.quick else "")
    if args.rounds or args.requests:
        command += f" --rounds {rounds} --requests {requests}"
    text = report(scenarios, notes, rounds, requests, command)
    print(text)
    if output is not None:
        output.write_text(text, encoding="utf-8")
        print(f"written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
