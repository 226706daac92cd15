"""The demo wiring, also what the end-to-end tests serve: upstream + /metrics behind gatekeeper."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import Mount, Route

from gatekeeper.demo.upstream import create_upstream
from gatekeeper.metrics import Metrics
from gatekeeper.middleware import Gatekeeper
from gatekeeper.store.base import Store
from gatekeeper.types import ASGIApp, Receive, Scope, Send


class LoopbackOnly:
    """Serves the wrapped app to clients on this machine only, 403 to anyone else: the demo's
    /metrics. The demo trusts no proxy, so ``scope["client"]`` is the TCP peer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not _loopback(scope.get("client")):
            await send({"type": "http.response.start", "status": 403,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
            await send({"type": "http.response.body",
                        "body": b"metrics are served to this machine only\n"})
            return
        await self.app(scope, receive, send)


def _loopback(client: object) -> bool:
    try:
        addr = ipaddress.ip_address(client[0])  # type: ignore[index]
    except (TypeError, ValueError, IndexError):
        return False
    mapped = getattr(addr, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is loopback too
    return bool((mapped or addr).is_loopback)


def build_demo_app(policy: str | os.PathLike[str], store: Store | None = None
                   ) -> tuple[Gatekeeper, Starlette]:
    """Returns (the app to serve, the upstream behind it: its ``state.seen`` lists what it got)."""
    upstream = create_upstream()
    metrics = Metrics()
    inner = Starlette(routes=[Route("/metrics", LoopbackOnly(metrics.asgi_app())),
                              Mount("/", upstream)])
    return Gatekeeper(inner, policy, store=store, metrics=metrics), upstream


def write_demo_policy(directory: Path) -> Path:
    """The demo policy, its pepper (0600) and store path, created once in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    pepper = directory / "pepper"
    if not pepper.exists():
        import secrets

        pepper.touch(mode=0o600)
        pepper.write_text(secrets.token_urlsafe(48) + "\n")
    policy = directory / "policy.yaml"
    if not policy.exists():
        template = (Path(__file__).parent / "policy.yaml").read_text()
        policy.write_text(template.format(store_path=(directory / "keys.db").resolve(),
                                          pepper_path=pepper.resolve()))
    return policy
