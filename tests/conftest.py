"""Shared fixtures: a pepper, a policy, a memory store with issued keys, and an httpx client
that drives a gatekeeper-wrapped app in process (real ASGI, no mocks)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from gatekeeper import Gatekeeper, MemoryStore, compile_policy, key_admin
from gatekeeper.compiled import stale
from gatekeeper.demo.upstream import create_upstream
from gatekeeper.policy.model import Policy
from gatekeeper.principal import KeyStatus
from gatekeeper.types import Message, Receive, Scope, Send

PEPPER = b"test-pepper-0123456789-abcdefghijklmnop"

POLICY: dict[str, Any] = {
    "routes": {"protect": ["/v1/*"], "public": ["/healthz"]},
    "client_address": {"trusted_proxies": ["10.0.0.0/8"]},
    "request_tenant": {"header": "x-tenant-id", "path_segment": None},
    "tenants": {
        "acme": {"allowed_networks": ["192.0.2.0/24", "10.0.0.0/8", "2001:db8::/32"]},
        "globex": {},
        "initech": {"disabled": True},
    },
}

ACME_CLIENT = ("192.0.2.10", 40000)


def pytest_configure(config: pytest.Config) -> None:
    changed = stale()
    if changed:  # Python would import the old build, and the tests would test old code
        pytest.exit(f"{', '.join(changed)} changed after it was compiled: `make test` "
                    "rebuilds it", returncode=4)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Env:
    """A gatekeeper in front of the demo upstream, with keys of every kind already issued."""

    policy: Policy
    store: MemoryStore
    gk: Gatekeeper
    upstream: Any
    keys: dict[str, str] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)

    def client(self, peer: tuple[str, int] = ACME_CLIENT) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.gk, client=peer)
        return httpx.AsyncClient(transport=transport, base_url="http://gatekeeper.test")

    @property
    def seen(self) -> list[tuple[str, str]]:
        return list(self.upstream.state.seen)


async def make_env(policy_data: dict[str, Any] | None = None, **gk_kwargs: Any) -> Env:
    policy = compile_policy(policy_data or POLICY)
    store = MemoryStore()
    upstream = create_upstream()
    gk = Gatekeeper(upstream, policy, store=store, pepper=PEPPER, **gk_kwargs)
    env = Env(policy, store, gk, upstream)
    now = time.time()

    async def issue(name: str, tenant: str, **kwargs: Any) -> None:
        key, record = await key_admin.create_key(store, PEPPER, policy, tenant, now, **kwargs)
        env.keys[name], env.ids[name] = key, record.key_id

    await issue("acme", "acme")
    await issue("acme_office", "acme", networks=["192.0.2.0/28"])
    await issue("acme_elsewhere", "acme", networks=["192.0.2.128/25"])
    await issue("globex", "globex")
    await issue("revoked", "acme")
    await key_admin.set_status(store, env.ids["revoked"], KeyStatus.REVOKED, now)
    await issue("suspended", "acme")
    await key_admin.set_status(store, env.ids["suspended"], KeyStatus.SUSPENDED, now)
    await issue("expiring", "acme", expires_at=now + 3600)
    return env


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    yield await make_env()


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def asgi_request(app: Any, path: str, headers: list[tuple[bytes, bytes]] | None = None,
                       *, method: str = "GET", client: Any = ("192.0.2.10", 40000),
                       root_path: str = "", body: bytes = b"") -> list[Message]:
    """One raw ASGI request, as a server builds it; returns every message the app sent."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": root_path,
             "headers": [(b"host", b"api.test"), *(headers or [])],
             "client": client, "server": ("api.test", 80)}
    await app(scope, receive, send)
    return sent


class Recorder:
    """A real ASGI app that answers 200 to anything and remembers which paths reached it."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.paths.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"reached the app"})


CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}

Mutator = Callable[[str], str]


class SteppingClock:
    """Wall and monotonic time moved apart: NTP or a VM restore can step the wall clock back
    while monotonic time goes on."""

    def __init__(self, wall: float) -> None:
        self.wall, self.mono = wall, 0.0

    def now(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono
