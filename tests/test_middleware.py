"""The middleware end to end in process: real Starlette upstream, real httpx client over ASGI.

Every refusal test also checks that the upstream saw nothing: a refused request never reaches
the app.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from typing import Any

import pytest

from gatekeeper import (
    SCOPE_KEY,
    Gatekeeper,
    ManualClock,
    MemoryStore,
    SQLiteStore,
    Store,
    build_key,
    compile_policy,
)
from gatekeeper.keys import KeyRecord
from gatekeeper.principal import KeyStatus
from gatekeeper.reasons import REFUSALS
from gatekeeper.types import Message, Receive, Scope, Send
from tests.conftest import CHAT, PEPPER, POLICY, Env, bearer, make_env

pytestmark = pytest.mark.anyio

OUTSIDE = ("203.0.113.5", 5555)
PROXY = ("10.1.2.3", 443)


def _typo(key: str) -> str:
    i = len(key) // 2
    return key[:i] + ("A" if key[i] != "A" else "B") + key[i + 1:]


async def _refused(env: Env, headers: dict[str, str], code: str, status: int,
                   peer: tuple[str, int] = ("192.0.2.10", 1)) -> dict[str, Any]:
    async with env.client(peer) as client:
        response = await client.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    assert env.seen == [], "a refused request reached the app"
    return dict(response.json()["error"]) | {"_headers": response.headers}


async def test_valid_key_reaches_app_with_its_tenant(env: Env) -> None:
    async with env.client() as client:
        response = await client.post("/v1/chat/completions", json=CHAT,
                                     headers=bearer(env.keys["acme"]))
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"].startswith("Hello acme")
    assert env.seen == [("POST", "/v1/chat/completions")]


@pytest.mark.parametrize("header", ["authorization", "api-key", "x-api-key"])
async def test_every_credential_header_works(env: Env, header: str) -> None:
    value = env.keys["acme"]
    value = f"Bearer {value}" if header == "authorization" else value
    async with env.client() as client:
        response = await client.get("/v1/models", headers={header: value})
    assert response.status_code == 200


@pytest.mark.parametrize(("case", "status", "code"), [
    ("none", 401, "credential_missing"),
    ("garbage", 401, "credential_malformed"),
    ("typo", 401, "credential_malformed"),
    ("basic", 401, "credential_malformed"),
    ("unknown", 401, "key_unknown"),
    ("wrong_secret", 401, "key_unknown"),
    ("revoked", 401, "key_revoked"),
    ("suspended", 401, "key_suspended"),
    ("conflict", 401, "credential_conflict"),
    ("key_network", 403, "network_not_allowed"),
    ("tenant_header", 403, "tenant_mismatch"),
])
async def test_refusals_never_reach_the_app(env: Env, case: str, status: int, code: str) -> None:
    key = env.keys["acme"]
    key_id = env.ids["acme"]
    headers = {
        "none": {},
        "garbage": bearer("sk-proj-not-one-of-ours"),
        "typo": bearer(_typo(key)),
        "basic": {"authorization": "Basic dXNlcjpwYXNz"},
        "unknown": bearer(build_key("Zz" + key_id[2:], secrets.token_urlsafe(24)[:32]
                                    .replace("-", "a").replace("_", "b"))),
        "wrong_secret": bearer(build_key(key_id, "a" * 32)),
        "revoked": bearer(env.keys["revoked"]),
        "suspended": bearer(env.keys["suspended"]),
        "conflict": {**bearer(key), "x-api-key": env.keys["globex"]},
        "key_network": bearer(env.keys["acme_elsewhere"]),
        "tenant_header": {**bearer(key), "x-tenant-id": "globex"},
    }[case]
    error = await _refused(env, headers, code, status)
    assert error["type"] == ("authentication_error" if status == 401 else "permission_error")
    assert ("www-authenticate" in error["_headers"]) == (status == 401)
    assert error["_headers"]["cache-control"] == "no-store"


async def test_refusal_does_not_say_which_networks_would_work(env: Env) -> None:
    error = await _refused(env, bearer(env.keys["acme_office"]), "network_not_allowed", 403,
                           peer=OUTSIDE)
    text = json.dumps({k: v for k, v in error.items() if k != "_headers"})
    assert "192.0.2" not in text and "/28" not in text


async def test_key_and_tenant_networks_must_both_allow() -> None:
    env = await make_env()
    async with env.client(("192.0.2.20", 1)) as client:  # in acme's /24, outside office /28
        assert (await client.get("/v1/models", headers=bearer(env.keys["acme_office"]))
                ).status_code == 403
        assert (await client.get("/v1/models", headers=bearer(env.keys["acme"]))
                ).status_code == 200
    async with env.client(("2001:db8::7", 1)) as client:  # IPv6 in the tenant's networks
        assert (await client.get("/v1/models", headers=bearer(env.keys["acme"]))
                ).status_code == 200
    async with env.client(OUTSIDE) as client:
        assert (await client.get("/v1/models", headers=bearer(env.keys["acme"]))
                ).status_code == 403


# Forwarding headers: only a trusted proxy (10.0.0.0/8 in the test policy) may name the client.

async def test_spoofed_forwarded_for_from_untrusted_peer_changes_nothing(env: Env) -> None:
    headers = {**bearer(env.keys["acme"]), "x-forwarded-for": "192.0.2.10"}
    await _refused(env, headers, "network_not_allowed", 403, peer=OUTSIDE)


async def test_garbage_forwarded_for_from_untrusted_peer_is_ignored(env: Env) -> None:
    async with env.client() as client:
        response = await client.get("/v1/models", headers={
            **bearer(env.keys["acme"]), "x-forwarded-for": "not-an-ip, \x7f, ::::"})
    assert response.status_code == 200


async def test_trusted_proxy_walks_right_to_left_to_first_untrusted_hop(env: Env) -> None:
    async with env.client(PROXY) as client:
        # The client prepended a spoofed allowed address; the proxy appended the real one.
        spoofed = {**bearer(env.keys["acme"]), "x-forwarded-for": "192.0.2.10, 203.0.113.9"}
        assert (await client.get("/v1/models", headers=spoofed)).status_code == 403
        honest = {**bearer(env.keys["acme"]),
                  "x-forwarded-for": "203.0.113.9, 192.0.2.10, 10.9.9.9"}
        assert (await client.get("/v1/models", headers=honest)).status_code == 200
    assert env.seen == [("GET", "/v1/models")]


@pytest.mark.parametrize("value", ["192.0.2.10:99999", "192.0.2.300", "a" * 5000,
                                   "192.0.2.10,,", "unknown"])
async def test_malformed_forwarded_for_from_trusted_proxy_is_a_clear_400(
        env: Env, value: str) -> None:
    headers = {**bearer(env.keys["acme"]), "x-forwarded-for": value}
    await _refused(env, headers, "forwarded_malformed", 400, peer=PROXY)


async def test_non_ascii_and_oversized_headers_are_refused_not_crashed(env: Env) -> None:
    async with env.client() as client:
        for value in ["Bearer gk_\u00e9\u00e9\u00e9".encode("latin-1"), b"Bearer " + b"x" * 20000,
                      b"Bearer ", b"Bearer\x00gk_", b"Token " + env.keys["acme"].encode()]:
            response = await client.get("/v1/models", headers=[(b"authorization", value)])
            assert response.status_code == 401, value[:40]
            assert response.json()["error"]["code"] in {"credential_malformed"}
    assert env.seen == []


async def test_expiry_and_revocation_follow_the_clock() -> None:
    clock = ManualClock(time.time())
    env = await make_env(clock=clock)
    async with env.client() as client:
        assert (await client.get("/v1/models", headers=bearer(env.keys["expiring"]))
                ).status_code == 200
        clock.advance(3601)
        response = await client.get("/v1/models", headers=bearer(env.keys["expiring"]))
        assert response.json()["error"]["code"] == "key_expired"

        assert (await client.get("/v1/models", headers=bearer(env.keys["acme"]))
                ).status_code == 200
        record = await env.store.get_key(env.ids["acme"])
        assert record is not None
        await env.store.update_key(record.with_changes(status=KeyStatus.REVOKED), record.version)
        clock.advance(env.policy.keys.cache_ttl + 0.01)  # the documented revocation delay
        response = await client.get("/v1/models", headers=bearer(env.keys["acme"]))
        assert response.json()["error"]["code"] == "key_revoked"


async def test_public_paths_and_lifespan_pass_without_credentials(env: Env) -> None:
    async with env.client(OUTSIDE) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/v1/models")).status_code == 401
        assert (await client.get("/v1")).status_code == 401
    events: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        events.append(scope["type"])
        await send({"type": "lifespan.startup.complete"})

    gk = Gatekeeper(app, env.policy, store=MemoryStore(), pepper=PEPPER)

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await gk({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    assert events == ["lifespan"]
    assert sent == [{"type": "lifespan.startup.complete"}]


@pytest.mark.parametrize("extension", [False, True])
async def test_refused_websocket_never_reaches_app(env: Env, extension: bool) -> None:
    reached: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(scope["path"])

    gk = Gatekeeper(app, env.policy, store=env.store, pepper=PEPPER)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/v1/realtime", "headers": [],
             "client": ("192.0.2.10", 1),
             "extensions": {"websocket.http.response": {}} if extension else {}}
    await gk(scope, receive, send)
    assert reached == []
    if extension:
        assert sent[0]["type"] == "websocket.http.response.start" and sent[0]["status"] == 401
        assert json.loads(sent[1]["body"])["error"]["code"] == "credential_missing"
    else:
        assert sent == [{"type": "websocket.close", "code": 1008, "reason": "credential_missing"}]


async def test_allowed_websocket_carries_the_decision(env: Env) -> None:
    seen: list[Any] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope[SCOPE_KEY])

    gk = Gatekeeper(app, env.policy, store=env.store, pepper=PEPPER)
    scope = {"type": "websocket", "path": "/v1/realtime", "client": ("192.0.2.10", 1),
             "headers": [(b"authorization", f"Bearer {env.keys['acme']}".encode())]}
    await gk(scope, None, None)  # type: ignore[arg-type]
    assert [(d.tenant, d.key_id) for d in seen] == [("acme", env.ids["acme"])]


class _FailingStore(Store):
    """A store whose backend breaks in a way gatekeeper did not foresee (a bug, not an outage)."""

    url = "failing://"

    async def get_key(self, key_id: str) -> KeyRecord | None:
        raise RuntimeError("unexpected")

    async def create_key(self, record: KeyRecord) -> None:
        raise RuntimeError("unexpected")

    async def update_key(self, record: KeyRecord, expected_version: int) -> KeyRecord:
        raise RuntimeError("unexpected")

    async def list_keys(self, tenant: str | None = None) -> list[KeyRecord]:
        return []


async def test_store_outage_fails_closed_with_503(env: Env, tmp_path: Any) -> None:
    path = tmp_path / "keys.db"
    path.write_bytes(b"this is not a database" * 100)
    gk = Gatekeeper(env.upstream, env.policy, store=SQLiteStore(path), pepper=PEPPER)
    env.gk = gk
    await _refused(env, bearer(env.keys["acme"]), "store_unavailable", 503)


async def test_unexpected_exception_fails_closed_without_traceback(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    env.gk = Gatekeeper(env.upstream, env.policy, store=_FailingStore(), pepper=PEPPER)
    with caplog.at_level(logging.ERROR, logger="gatekeeper"):
        error = await _refused(env, bearer(env.keys["acme"]), "internal_error", 503)
    assert "Traceback" not in error["message"] and "unexpected" not in error["message"]
    assert any("fail closed" in r.getMessage() for r in caplog.records)


async def test_metrics_count_decisions_by_reason_without_key_labels(env: Env) -> None:
    async with env.client() as client:
        await client.get("/v1/models", headers=bearer(env.keys["acme"]))
        await client.get("/v1/models", headers=bearer(env.keys["revoked"]))
        await client.get("/v1/models", headers=bearer(env.keys["revoked"]))
    registry = env.gk.metrics.registry
    sample = registry.get_sample_value
    assert sample("gatekeeper_decisions_total", {"outcome": "allow", "reason": "ok"}) == 1
    assert sample("gatekeeper_decisions_total",
                  {"outcome": "refuse", "reason": "key_revoked"}) == 2
    assert sample("gatekeeper_added_latency_seconds_count", {"outcome": "refuse"}) == 2
    labels = {k for m in registry.collect() for s in m.samples for k in s.labels}
    assert labels <= {"outcome", "reason", "le", "version", "compiled", "fingerprint", "event",
                      "result"}  # closed sets
    exported = "\n".join(str(s) for m in registry.collect() for s in m.samples)
    assert env.ids["acme"] not in exported


async def test_audit_line_per_refusal_carries_key_id_never_the_secret(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="gatekeeper.audit"):
        async with env.client(OUTSIDE) as client:
            await client.get("/v1/models", headers=bearer(env.keys["acme"]))
            await client.get("/v1/models%0Aforged", headers=bearer(env.keys["revoked"]))
            await client.get("/v1/models", headers=bearer(_typo(env.keys["globex"])))
    lines = [r.getMessage() for r in caplog.records if r.name == "gatekeeper.audit"]
    assert len(lines) == 3
    events = [json.loads(line) for line in lines]  # one JSON object per line, even with \n
    assert [e["reason"] for e in events] == ["network_not_allowed", "key_revoked",
                                            "credential_malformed"]
    assert events[0]["key_id"] == env.ids["acme"] and events[0]["tenant"] == "acme"
    assert events[0]["client_ip"] == "203.0.113.5"
    assert events[1]["path"] == "/v1/models\nforged"  # escaped inside its one line
    assert all("\n" not in line for line in lines)
    for key in env.keys.values():
        assert all(key not in line and key[15:] not in line for line in lines)


async def test_jwt_bearer_through_the_middleware(monkeypatch: pytest.MonkeyPatch) -> None:
    import jwt

    secret = secrets.token_urlsafe(40)
    monkeypatch.setenv("TEST_JWT_SECRET", secret)
    policy = {**POLICY, "jwt": {"issuers": {"corp": {
        "issuer": "https://sso.example.test/", "audiences": ["gatekeeper"],
        "algorithms": ["HS256"], "secret_env": "TEST_JWT_SECRET"}}}}
    clock = ManualClock(time.time())
    env = await make_env(policy, clock=clock)
    claims = {"iss": "https://sso.example.test/", "aud": "gatekeeper", "sub": "alice",
              "tenant": "acme", "exp": int(clock.now()) + 60}
    good = jwt.encode(claims, secret, algorithm="HS256")
    async with env.client() as client:
        response = await client.post("/v1/chat/completions", json=CHAT, headers=bearer(good))
        assert response.status_code == 200
        assert "Hello acme" in response.json()["choices"][0]["message"]["content"]
        other = jwt.encode({**claims, "aud": "another-service"}, secret, algorithm="HS256")
        assert (await client.get("/v1/models", headers=bearer(other))).json()["error"][
            "code"] == "token_invalid"
        clock.advance(60 + 31)  # past exp and the default 30 s leeway, served from the cache
        assert (await client.get("/v1/models", headers=bearer(good))).json()["error"][
            "code"] == "token_expired"
    assert env.seen == [("POST", "/v1/chat/completions")]


def test_every_reason_has_a_distinct_code_and_a_client_safe_body() -> None:
    codes = [r.code for r in REFUSALS]
    assert len(codes) == len(set(codes))
    for reason in REFUSALS:
        body = json.loads(reason.body)
        assert body["error"]["code"] == (reason.wire_code or reason.code)
        assert reason.status in (400, 401, 403, 413, 415, 429, 503)


def test_policy_argument_accepts_a_mapping_and_rejects_bad_ones() -> None:
    gk = Gatekeeper(lambda *a: None, POLICY, store=MemoryStore(), pepper=PEPPER)  # type: ignore[arg-type]
    assert set(gk.policy.tenants) == {"acme", "globex", "initech"}
    with pytest.raises(Exception, match=r"tenants\.acme\.allowed_networks\[0\]"):
        compile_policy({"tenants": {"acme": {"allowed_networks": ["10.0.0/8"]}}})


@pytest.mark.parametrize(("case", "real"), [
    ("revoked", "key_revoked"), ("suspended", "key_suspended"),
    ("acme_elsewhere", "network_not_allowed"), ("unknown", "key_unknown"),
])
async def test_concealed_refusals_look_like_an_unknown_key_on_the_wire(
        case: str, real: str, caplog: pytest.LogCaptureFixture) -> None:
    """A key checker probing stolen keys cannot tell a live key bound elsewhere, or a
    revoked one, from a key that never existed; the audit trail keeps the real reason."""
    env = await make_env({**POLICY, "refusals": {"conceal": True}})
    key = build_key("Zz" + env.ids["acme"][2:], "q" * 32) if case == "unknown" \
        else env.keys[case]
    with caplog.at_level(logging.INFO, logger="gatekeeper.audit"):
        async with env.client() as client:
            response = await client.get("/v1/models", headers=bearer(key))
    unknown = next(r for r in REFUSALS if r.code == "key_unknown")
    assert (response.status_code, response.content) == (401, unknown.body)
    assert json.loads(caplog.records[-1].getMessage())["reason"] == real
    assert env.seen == []


async def test_refusals_are_not_concealed_by_default(env: Env) -> None:
    async with env.client() as client:
        response = await client.get("/v1/models", headers=bearer(env.keys["revoked"]))
    assert response.json()["error"]["code"] == "key_revoked"


async def test_audit_line_of_a_malformed_credential_names_its_header(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="gatekeeper.audit"):
        async with env.client() as client:
            await client.get("/v1/models", headers={"x-api-key": "not a key"})
            await client.get("/v1/models", headers={"authorization": "Basic dXNlcjpwYXNz"})
    events = [json.loads(r.getMessage()) for r in caplog.records
              if r.name == "gatekeeper.audit"]
    assert [(e["reason"], e["credential_header"]) for e in events] == [
        ("credential_malformed", "x-api-key"), ("credential_malformed", "authorization")]


async def test_an_allowed_decision_with_headers_answers_through_the_responder(env: Env) -> None:
    """The plug for limits: a decision's headers (x-ratelimit-*) reach the client on the
    app's own response; decisions without headers keep the unwrapped path."""
    async with env.client() as client:
        first = await client.post("/v1/chat/completions", json=CHAT,
                                  headers=bearer(env.keys["acme"]))
        assert "x-ratelimit-limit-requests" not in first.headers
        (record,) = env.gk.runtime.decisions.values()
        record.decision = record.decision._replace(
            headers=((b"x-ratelimit-limit-requests", b"60"),))
        second = await client.post("/v1/chat/completions", json=CHAT,
                                   headers=bearer(env.keys["acme"]))
    assert second.status_code == 200 and second.headers["x-ratelimit-limit-requests"] == "60"
    assert second.json()["choices"][0]["message"]["content"].startswith("Hello acme")
    assert len(env.seen) == 2
