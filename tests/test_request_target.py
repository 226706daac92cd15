"""Regression (security review, item 1, high): request-targets that do not start with '/'.

uvicorn's default h11 backend puts the raw request-target in ``scope["path"]``: an
absolute-form target (``GET http://any.host/v1/models``) or a slash-less one
(``GET v1/models``) was not matched by ``protect: ["/v1/*"]``, so a request with no
credential reached the app; ``/V1/models`` and ``/v1;x/models`` passed too, and reach an
upstream that ignores case or strips ``;`` parameters. A forwarding app (the Recorder here
answers 200 to any path, as a forwarding proxy in front of the GenAI endpoint does) served
them. Every test sends its request line byte for byte over a real socket.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from gatekeeper import Gatekeeper, MemoryStore
from tests.conftest import PEPPER, Recorder, asgi_request
from tests.serving import raw_request, serving, status_of

POLICY: dict[str, Any] = {"routes": {"protect": ["/v1/*"], "public": ["/healthz"]},
                          "tenants": {"acme": {}}}


def _served() -> tuple[Gatekeeper, Recorder]:
    recorder = Recorder()
    return Gatekeeper(recorder, POLICY, store=MemoryStore(), pepper=PEPPER), recorder


def _code(reply: bytes) -> str:
    body = reply.split(b"\r\n\r\n", 1)[1]
    code: str = json.loads(body)["error"]["code"]
    return code


@pytest.mark.parametrize("target", [
    "http://any.host/v1/models",
    "HTTP://any.host:8080/v1/chat/completions",
    "https://x/v1",
    "v1/models",
    "v1",
    "/V1/models",
    "/v1;x/models",
    "/v1/;/models",
    "/V1;jsessionid=1/Models",
    "/%56%31/models",
    "/v1\\models",
])
def test_odd_targets_of_protected_paths_are_refused_over_h11(target: str) -> None:
    gk, recorder = _served()
    with serving(gk) as base:
        reply = raw_request(base, f"GET {target} HTTP/1.1")
    assert status_of(reply) == 401, reply[:200]
    assert _code(reply) == "credential_missing"
    assert recorder.paths == [], "the request reached the app"


@pytest.mark.parametrize(("line", "headers"), [
    ("OPTIONS * HTTP/1.1", {}),
    ("CONNECT api.example:443 HTTP/1.1", {}),
])
def test_targets_that_name_no_path_are_a_clear_400(line: str, headers: dict[str, str]) -> None:
    gk, recorder = _served()
    with serving(gk) as base:
        reply = raw_request(base, line, headers)
    assert status_of(reply) == 400, reply[:200]
    assert _code(reply) == "request_target_invalid"
    assert recorder.paths == []


def test_public_and_unprotected_targets_still_pass_over_h11() -> None:
    gk, recorder = _served()
    with serving(gk) as base:
        assert status_of(raw_request(base, "GET /healthz HTTP/1.1")) == 200
        assert status_of(raw_request(base, "GET /v2/other HTTP/1.1")) == 200
        assert status_of(raw_request(base, "GET http://host/healthz HTTP/1.1")) == 200
    assert recorder.paths == ["/healthz", "/v2/other", "http://host/healthz"]


def test_case_never_widens_a_public_pattern() -> None:
    from gatekeeper.routes import RoutePolicy

    routes = RoutePolicy.compile(("/*",), ("/healthz",))
    assert routes.answer("/healthz") == ""
    assert routes.answer("/HEALTHZ") == "/HEALTHZ"
    assert routes.answer("/healthz;x") == "/healthz;x"


def test_uppercase_protect_patterns_also_guard_lowercase_spellings() -> None:
    from gatekeeper.routes import RoutePolicy

    routes = RoutePolicy.compile(("/API/*",), ())
    assert routes.answer("/api/x") == "/api/x"
    assert routes.answer("/Api/x") == "/Api/x"
    assert routes.answer("/other") == ""


@pytest.mark.parametrize(("target", "canonical"), [
    ("/v1/x", "/v1/x"),
    ("http://h/v1/x", "/v1/x"),
    ("http://h", "/"),
    ("v1/x", "/v1/x"),
    ("models", "/models"),
    ("*", None),
    ("", None),
    ("host:443", None),
    ("http://h?x", None),
])
def test_canonical_targets(target: str, canonical: str | None) -> None:
    from gatekeeper.routes import canonical_target

    assert canonical_target(target) == canonical


# --- smaller findings about routes (item 11) -----------------------------------------------

@pytest.mark.anyio
async def test_public_paths_pass_when_gatekeeper_is_mounted_below_a_prefix() -> None:
    """Under Mount('/api') the full path '/api/healthz' was checked against protect '/*'."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    recorder = Recorder()
    gk = Gatekeeper(recorder, {"routes": {"public": ["/healthz"]}, "tenants": {"acme": {}}},
                    store=MemoryStore(), pepper=PEPPER)
    outer = Starlette(routes=[Mount("/api", app=gk)])
    assert (await asgi_request(outer, "/api/healthz"))[0]["status"] == 200
    assert (await asgi_request(outer, "/api/v1/models"))[0]["status"] == 401
    assert recorder.paths == ["/api/healthz"]


@pytest.mark.anyio
async def test_unknown_scope_types_never_reach_the_app() -> None:
    recorder = Recorder()
    gk = Gatekeeper(recorder, POLICY, store=MemoryStore(), pepper=PEPPER)
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "webtransport.connect"}

    async def send(message: Any) -> None:
        sent.append(message)

    await gk({"type": "webtransport", "path": "/v1/x", "headers": []}, receive, send)
    assert recorder.paths == [] and sent == []
