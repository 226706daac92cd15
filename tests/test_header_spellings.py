"""Regression (security review, item 2): header names spelt with '_' instead of '-'.

h11 and httptools accept ``x_tenant_id`` and ``x_api_key``; gatekeeper ignored them, but an
app behind asgiref's WSGI adapter (any Flask app) reads them as ``X-Tenant-Id`` /
``X-Api-Key`` (``HTTP_X_TENANT_ID`` in its environ). The WSGI app below trusts exactly what
such apps trust; gatekeeper must check those spellings too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import httpx
import pytest
from asgiref.wsgi import WsgiToAsgi

from gatekeeper import Gatekeeper
from tests.conftest import PEPPER, POLICY, make_env
from tests.serving import serving

pytestmark = pytest.mark.anyio

PROXY = ("10.1.2.3", 443)


def wsgi_app(environ: dict[str, Any],
             start_response: Callable[[str, list[tuple[str, str]]], Any]) -> Iterable[bytes]:
    """What a Flask app behind the adapter sees: the tenant and key it would act on."""
    seen = {"tenant": environ.get("HTTP_X_TENANT_ID"), "api_key": environ.get("HTTP_X_API_KEY"),
            "forwarded_for": environ.get("HTTP_X_FORWARDED_FOR")}
    start_response("200 OK", [("content-type", "application/json")])
    return [json.dumps(seen).encode()]


async def _gatekeeper() -> tuple[Gatekeeper, dict[str, str]]:
    env = await make_env()
    app = WsgiToAsgi(wsgi_app)  # type: ignore[no-untyped-call]
    return Gatekeeper(app, env.policy, store=env.store, pepper=PEPPER), env.keys


async def _get(gk: Gatekeeper, headers: list[tuple[bytes, bytes]],
               peer: tuple[str, int] = ("192.0.2.10", 1)) -> httpx.Response:
    transport = httpx.ASGITransport(app=gk, client=peer)
    async with httpx.AsyncClient(transport=transport, base_url="http://gk.test") as client:
        return await client.get("/v1/models", headers=headers)


async def test_the_adapter_really_reads_underscore_names_as_dashes() -> None:
    gk, keys = await _gatekeeper()
    response = await _get(gk, [(b"authorization", f"Bearer {keys['acme']}".encode()),
                               (b"x_tenant_id", b"acme")])
    assert response.status_code == 200
    assert response.json()["tenant"] == "acme"  # the premise of the finding


async def test_a_tenant_named_with_underscores_is_checked() -> None:
    gk, keys = await _gatekeeper()
    response = await _get(gk, [(b"authorization", f"Bearer {keys['acme']}".encode()),
                               (b"x_tenant_id", b"globex")])
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "tenant_mismatch"


async def test_two_spellings_naming_two_tenants_conflict() -> None:
    gk, keys = await _gatekeeper()
    response = await _get(gk, [(b"authorization", f"Bearer {keys['acme']}".encode()),
                               (b"x-tenant-id", b"acme"), (b"x_tenant_id", b"globex")])
    assert response.json()["error"]["code"] == "tenant_mismatch"


async def test_a_second_credential_spelt_with_underscores_conflicts() -> None:
    gk, keys = await _gatekeeper()
    response = await _get(gk, [(b"authorization", f"Bearer {keys['acme']}".encode()),
                               (b"x_api_key", keys["globex"].encode())])
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "credential_conflict"


async def test_a_credential_spelt_with_underscores_is_a_credential() -> None:
    gk, keys = await _gatekeeper()
    ok = await _get(gk, [(b"x_api_key", keys["acme"].encode())])
    assert ok.status_code == 200 and ok.json()["api_key"] == keys["acme"]
    revoked = await _get(gk, [(b"api_key", keys["revoked"].encode())])
    assert revoked.json()["error"]["code"] == "key_revoked"


async def test_a_forwarding_header_spelt_with_underscores_from_a_trusted_proxy_is_refused() -> None:
    gk, keys = await _gatekeeper()  # POLICY trusts 10.0.0.0/8
    response = await _get(gk, [(b"authorization", f"Bearer {keys['acme']}".encode()),
                               (b"x-forwarded-for", b"192.0.2.10"),
                               (b"x_forwarded_for", b"203.0.113.9")], peer=PROXY)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "forwarded_malformed"
    # from an untrusted peer forwarding headers are noise, whatever their spelling
    plain = await _get(gk, [(b"authorization", f"Bearer {keys['acme']}".encode()),
                            (b"x_forwarded_for", b"203.0.113.9")])
    assert plain.status_code == 200


def test_underscore_names_survive_a_real_h11_server() -> None:
    """The spelling reaches gatekeeper through uvicorn (h11) unchanged, and is checked there."""
    import anyio

    gk, keys = anyio.run(_gatekeeper)
    assert POLICY["request_tenant"]["header"] == "x-tenant-id"
    with serving(gk) as base:
        response = httpx.get(f"{base}/v1/models", headers=[
            ("authorization", f"Bearer {keys['acme']}"), ("x_tenant_id", "globex")])
    # 127.0.0.1 is outside acme's networks, so the tenant check (which comes first) is
    # what must answer: the request names another tenant
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "tenant_mismatch"
