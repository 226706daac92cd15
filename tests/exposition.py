"""A real ``/metrics`` exposition: a Gatekeeper that has decided allowed and refused requests
and loaded its policy the way the middleware does, scraped through its own ASGI app."""

from __future__ import annotations

import re

import httpx

from tests.conftest import bearer, make_env

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? ", re.MULTILINE)


async def scrape() -> str:
    env = await make_env()
    env.gk.metrics.policy_loaded(env.policy, env.gk.clock.now())  # what startup/reload call
    async with env.client() as client:
        await client.get("/v1/models", headers=bearer(env.keys["acme"]))
        await client.get("/v1/models", headers=bearer(env.keys["revoked"]))
        await client.get("/v1/models")
    transport = httpx.ASGITransport(app=env.gk.metrics.asgi_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://metrics.test") as client:
        response = await client.get("/")
    assert response.status_code == 200
    return response.text


def metric_names(exposition: str) -> set[str]:
    """Every sample name in the exposition (histogram series included)."""
    return {m.group(1) for m in SAMPLE.finditer(exposition)}
