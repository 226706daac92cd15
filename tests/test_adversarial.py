"""Adversarial review: attacks on routing, headers, client address, JWTs, secrets and caches.

Each test is an attack that must keep failing. Five of them found real bugs when written (the
mount point's ``root_path``, dot segments around a path tenant, uppercase header names from a
non-compliant server, a non-finite ``exp``, a key echoed from a malformed forwarding hop).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from starlette.applications import Starlette
from starlette.routing import Mount

from gatekeeper import (
    Authenticator,
    Gatekeeper,
    JwtVerifier,
    MemoryStore,
    Principal,
    Refusal,
    build_key,
    compile_policy,
)
from gatekeeper import credentials as credentials_module
from gatekeeper import networks as networks_module
from gatekeeper.credentials import Credential, credential_from
from tests.conftest import PEPPER, POLICY, Env, Recorder, asgi_request, make_env

pytestmark = pytest.mark.anyio

PROXY = ("10.1.2.3", 443)  # inside POLICY's trusted_proxies (and inside acme's networks)
OFFICE = ("192.0.2.10", 40000)  # inside acme's networks


# --- raw ASGI driving -----------------------------------------------------------------------

async def call(app: Any, path: str, headers: list[tuple[bytes, bytes]] | None = None, *,
               client: tuple[str, int] | None = OFFICE, root_path: str = "") -> tuple[int, str]:
    """One raw ASGI request: the status and the error code."""
    sent = await asgi_request(app, path, headers, method="POST", client=client,
                              root_path=root_path)
    status: int = sent[0]["status"]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    code = json.loads(body)["error"]["code"] if status >= 400 and body.startswith(b"{") else ""
    return status, code


def auth(key: str) -> tuple[bytes, bytes]:
    return (b"authorization", b"Bearer " + key.encode())


async def env_with_recorder(policy: dict[str, Any] | None = None) -> tuple[Env, Recorder]:
    env = await make_env(policy)
    recorder = Recorder()
    env.gk.app = recorder
    return env, recorder


# --- routes: the path gatekeeper checks is the path the app routes -------------------------

async def test_gatekeeper_mounted_below_a_prefix_still_guards_its_routes() -> None:
    recorder = Recorder()
    gk = Gatekeeper(recorder, {"routes": {"protect": ["/v1/*"], "public": ["/healthz"]},
                               "tenants": {"acme": {}}}, store=MemoryStore(), pepper=PEPPER)
    outer = Starlette(routes=[Mount("/openai", app=gk)])
    assert await call(outer, "/openai/v1/chat/completions") == (401, "credential_missing")
    assert recorder.paths == []


async def test_server_root_path_does_not_unguard_protected_routes() -> None:
    env, recorder = await env_with_recorder()  # POLICY protects /v1/*
    assert await call(env.gk, "/api/v1/models", root_path="/api") == (401, "credential_missing")
    assert recorder.paths == []


@pytest.mark.parametrize("path", [
    "/v1/models", "//v1/models", "/v1/./models", "/healthz/../v1/models", "/%761/models",
    "/v1%2Fmodels", "/V1/../v1/models", "/healthz/%2e%2e/v1/models",
])
async def test_path_spellings_of_v1_are_refused_through_the_whole_middleware(path: str) -> None:
    env, recorder = await env_with_recorder()
    status, code = await call(env.gk, path)
    assert (status, code) == (401, "credential_missing")
    assert recorder.paths == []


# --- request_tenant.path_segment ------------------------------------------------------------

SEGMENT_POLICY = {**POLICY, "request_tenant": {"path_segment": 1}}  # /v1/<tenant>/...


@pytest.mark.parametrize("path", [
    "/v1/globex/chat",
    "/v1/./globex/chat",     # the slot holds '.', which is not acme
    "//v1/globex/chat",      # the slot holds 'v1'
    "/v1/%67lobex/chat",     # a double-encoded name never equals acme
    "/v1/globex",
])
async def test_path_tenant_of_another_tenant_is_refused(path: str) -> None:
    env, recorder = await env_with_recorder(SEGMENT_POLICY)
    status, code = await call(env.gk, path, [auth(env.keys["acme"])])
    assert (status, code) == (403, "tenant_mismatch")
    assert recorder.paths == []


async def test_path_tenant_of_the_keys_own_tenant_is_allowed() -> None:
    env, recorder = await env_with_recorder(SEGMENT_POLICY)
    assert await call(env.gk, "/v1/acme/chat", [auth(env.keys["acme"])]) == (200, "")
    assert recorder.paths == ["/v1/acme/chat"]


@pytest.mark.parametrize("path", [
    "/v1//globex/chat",
    "/v1/acme/../globex/chat",
    "/v1/acme//../globex/chat",
    "/v1/acme/%2e%2e/globex/chat",
])
async def test_path_tenant_cannot_be_dodged_by_empty_or_dot_segments(path: str) -> None:
    env, recorder = await env_with_recorder(SEGMENT_POLICY)
    status, code = await call(env.gk, path, [auth(env.keys["acme"])])
    assert (status, code) == (403, "tenant_mismatch")
    assert recorder.paths == []


# --- header tricks --------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [
    [(b"x-tenant-id", b"acme"), (b"x-tenant-id", b"globex")],
    [(b"x-tenant-id", b"globex"), (b"x-tenant-id", b"acme")],
    [(b"x-tenant-id", b"acme, globex")],
    [(b"x-tenant-id", b"")],
    [(b"x-tenant-id", b"ACME")],
])
async def test_duplicate_or_odd_tenant_headers_are_refused(
        headers: list[tuple[bytes, bytes]]) -> None:
    env, recorder = await env_with_recorder()
    status, code = await call(env.gk, "/v1/models", [auth(env.keys["acme"]), *headers])
    assert (status, code) == (403, "tenant_mismatch")
    assert recorder.paths == []


@pytest.mark.parametrize("name", [b"Authorization", b"AUTHORIZATION", b"Api-Key", b"X-API-KEY"])
async def test_uppercase_credential_header_names_read_like_lowercase(name: bytes) -> None:
    """A non-compliant server passing names as sent: names are lowered, the binding holds."""
    env, recorder = await env_with_recorder()
    value = b"Bearer " + env.keys["acme"].encode() if name.lower() == b"authorization" \
        else env.keys["acme"].encode()
    assert (await call(env.gk, "/v1/models", [(name, value)]))[0] == 200
    assert recorder.paths == ["/v1/models"]
    value = value.replace(env.keys["acme"].encode(), env.keys["acme_elsewhere"].encode())
    assert await call(env.gk, "/v1/models", [(name, value)]) == (403, "network_not_allowed")
    assert recorder.paths == ["/v1/models"]


async def test_uppercase_copy_does_not_hide_a_conflicting_lowercase_credential() -> None:
    env, recorder = await env_with_recorder()
    headers = [(b"X-Api-Key", env.keys["acme"].encode()), auth(env.keys["globex"]),
               (b"x-api-key", env.keys["acme"].encode())]
    assert await call(env.gk, "/v1/models", headers) == (401, "credential_conflict")
    assert recorder.paths == []


async def test_uppercase_forwarding_header_from_a_trusted_proxy_is_not_ignored() -> None:
    env, recorder = await env_with_recorder()
    lower = [auth(env.keys["acme"]), (b"x-forwarded-for", b"203.0.113.5")]
    assert await call(env.gk, "/v1/models", lower, client=PROXY) == (403, "network_not_allowed")
    upper = [auth(env.keys["acme"]), (b"X-Forwarded-For", b"203.0.113.5")]
    assert (await call(env.gk, "/v1/models", upper, client=PROXY))[0] in (400, 403)
    assert recorder.paths == []


async def test_uppercase_tenant_header_is_still_checked() -> None:
    env, recorder = await env_with_recorder()
    headers = [auth(env.keys["acme"]), (b"X-Tenant-Id", b"globex")]
    assert await call(env.gk, "/v1/models", headers) == (403, "tenant_mismatch")
    assert recorder.paths == []


# --- client address -------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [
    # only x-forwarded-for is configured: a client-written Forwarded is noise
    [(b"forwarded", b"for=192.0.2.10"), (b"x-forwarded-for", b"203.0.113.5")],
    [(b"x-forwarded-for", b"192.0.2.10"), (b"x-forwarded-for", b"203.0.113.5")],
    [(b"x-forwarded-for", b'"192.0.2.10, 203.0.113.5"')],
    [(b"x-forwarded-for", b"192.0.2.10,203.0.113.5,10.9.9.9")],
    [(b"x-forwarded-for", b"192.0.2.10 , 203.0.113.5:4711")],
    [(b"x-forwarded-for", b"10.0.0.1, [::ffff:203.0.113.5]:80")],
])
async def test_client_written_hops_never_move_the_client(
        headers: list[tuple[bytes, bytes]]) -> None:
    env, recorder = await env_with_recorder()
    status, code = await call(env.gk, "/v1/models", [auth(env.keys["acme"]), *headers],
                              client=PROXY)
    assert status in (400, 403), code
    assert recorder.paths == []


@pytest.mark.parametrize("hop", [
    b"192.0.2.10%eth0", b"unknown", b"_hidden", b"192.0.2.10:0x50", b"[192.0.2.10]",
    b"192.0.2.010", b"0xc0.0.2.10", b"3221225994", b"192.0.2.10\x00", b"\xc0\x00\x02\x0a",
])
async def test_odd_reached_hops_are_a_400_never_the_proxy_address(hop: bytes) -> None:
    env, recorder = await env_with_recorder()
    headers = [auth(env.keys["acme"]), (b"x-forwarded-for", hop)]
    assert await call(env.gk, "/v1/models", headers, client=PROXY) == (400, "forwarded_malformed")
    assert recorder.paths == []


async def test_forwarded_quoted_obfuscated_and_unknown_nodes_are_refused() -> None:
    policy = {**POLICY, "client_address": {"trusted_proxies": ["10.0.0.0/8"],
                                           "header": "forwarded"}}
    env, recorder = await env_with_recorder(policy)
    for value in (b'for="_gazonk"', b"for=unknown", b'for="192.0.2.10',
                  b"for=192.0.2.10;for=1.1.1.1", b'for="[2001:db8::1]:80";for=10.0.0.1'):
        headers = [auth(env.keys["acme"]), (b"forwarded", value)]
        assert await call(env.gk, "/v1/models", headers, client=PROXY) == (
            400, "forwarded_malformed"), value
    # an XFF the client adds is ignored when Forwarded is the configured header
    headers = [auth(env.keys["acme"]), (b"x-forwarded-for", b"192.0.2.10"),
               (b"forwarded", b"for=203.0.113.5")]
    assert await call(env.gk, "/v1/models", headers, client=PROXY) == (403, "network_not_allowed")
    assert recorder.paths == []


# --- JWTs -----------------------------------------------------------------------------------

NOW = 1_800_000_000
ISS = "https://sso.example.test/"
PARTNER_ISS = "https://login.partner.test/"
JWKS_URL = "https://sso.example.test/jwks.json"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PARTNER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    return {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid}


def _sign(key: rsa.RSAPrivateKey, headers: dict[str, Any] | None = None,
          raw_payload: str | None = None, **overrides: Any) -> str:
    body = {"iss": ISS, "aud": "gatekeeper", "sub": "alice", "tenant": "acme", "iat": NOW,
            "exp": NOW + 300, **overrides}
    payload = raw_payload if raw_payload is not None else json.dumps(body)
    return jwt.api_jws.encode(payload.encode(), key, algorithm="RS256", headers=headers)


def _two_issuers() -> JwtVerifier:
    policy = compile_policy({"jwt": {"issuers": {
        "corp": {"issuer": ISS, "audiences": ["gatekeeper"], "algorithms": ["RS256"],
                 "public_keys": {"main": _pem(RSA_KEY)}},
        "partner": {"issuer": PARTNER_ISS, "audiences": ["gatekeeper"],
                    "algorithms": ["RS256"], "public_keys": {"p1": _pem(PARTNER_KEY)}},
    }}})
    return JwtVerifier(policy.issuers, environ={})


async def _code(verifier: JwtVerifier, token: str) -> str:
    result = await verifier.verify(token, float(NOW))
    return "ok" if isinstance(result, Principal) else result.reason.code


async def test_token_signed_by_another_configured_issuer_cannot_claim_this_issuer() -> None:
    verifier = _two_issuers()
    assert await _code(verifier, _sign(PARTNER_KEY, iss=PARTNER_ISS)) == "ok"
    # the partner's key, the partner's kid, corp's iss: corp's keys are used, and refuse it
    assert await _code(verifier, _sign(PARTNER_KEY, {"kid": "p1"})) == "token_invalid"
    assert await _code(verifier, _sign(PARTNER_KEY, {"kid": "main"})) == "token_invalid"
    assert await _code(verifier, _sign(PARTNER_KEY)) == "token_invalid"
    # corp's key with the partner's iss
    assert await _code(verifier, _sign(RSA_KEY, iss=PARTNER_ISS)) == "token_invalid"


@pytest.mark.parametrize("kid", [
    "../../../../etc/passwd", "main' OR '1'='1", "main\u0000", "main ", "MAIN", "*", "",
    "main/../main", "x" * 2000,
])
async def test_kid_injection_finds_no_key(kid: str) -> None:
    verifier = _two_issuers()
    assert await _code(verifier, _sign(RSA_KEY, {"kid": kid})) in ("token_invalid",
                                                                 "credential_malformed")
    assert verifier.verifications == 0


class FakeIdp:
    def __init__(self) -> None:
        self.fetched: list[str] = []

    async def __call__(self, url: str) -> bytes:
        self.fetched.append(url)
        return json.dumps({"keys": [_jwk(RSA_KEY, "k1")]}).encode()


async def test_jku_x5u_and_embedded_jwk_headers_are_ignored() -> None:
    policy = compile_policy({"jwt": {"issuers": {"corp": {
        "issuer": ISS, "audiences": ["gatekeeper"], "algorithms": ["RS256"],
        "jwks_url": JWKS_URL}}}})
    idp = FakeIdp()
    verifier = JwtVerifier(policy.issuers, fetch_jwks=idp, environ={})
    assert await _code(verifier, _sign(RSA_KEY, {"kid": "k1"})) == "ok"
    evil = "https://evil.example.test/jwks.json"
    for headers in ({"kid": "k1", "jwk": _jwk(PARTNER_KEY, "k1")},
                    {"kid": "k1", "jku": evil, "x5u": evil},
                    {"kid": "evil", "jku": evil, "jwk": _jwk(PARTNER_KEY, "evil")},
                    {"jwk": _jwk(PARTNER_KEY, "k1")}):
        assert await _code(verifier, _sign(PARTNER_KEY, headers)) in (
            "token_invalid", "credential_malformed"), headers
    assert set(idp.fetched) == {JWKS_URL}


@pytest.mark.parametrize("headers", [{"crit": ["exp"], "exp": NOW + 10**9}, {"crit": ["b64"]},
                                     {"crit": "x"}, {"crit": []}, {"b64": False, "crit": ["b64"]}])
async def test_crit_and_b64_headers_are_refused(headers: dict[str, Any]) -> None:
    verifier = _two_issuers()
    assert await _code(verifier, _sign(RSA_KEY, headers)) != "ok"


async def test_non_canonical_signature_spellings_are_refused_and_never_cached() -> None:
    verifier = _two_issuers()
    token = _sign(RSA_KEY)
    assert await _code(verifier, token) == "ok"
    head, payload, sig = token.split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(sig[-1])  # RS256: 256 bytes, the last character's low 4 bits unused
    variants = [f"{head}.{payload}.{sig[:-1]}{alphabet[(last & ~15) | bits]}"
                for bits in range(16) if (last & 15) != bits]
    variants += [f"{head}.{payload}.{sig}=", f"{head}.{payload}.{sig}====",
                 f"{head}.{payload}.{sig}!!", f"{head}.{payload}.{sig[:5]}*{sig[5:]}",
                 f"{head}.{payload}.{sig}" + "~" * 6000, f"{head}.{payload}.{sig}" + "=" * 6000,
                 f"{head}=.{payload}.{sig}", f"{head}.{payload}.={sig}"]
    for variant in variants:
        assert await _code(verifier, variant) != "ok", variant
    assert len(verifier._cache) == 1
    # The one other accepted spelling is the standard '==' padding: at most two cache entries
    # per signed token, so one token cannot be multiplied into thousands of cached strings.
    assert await _code(verifier, f"{head}.{payload}.{sig}==") == "ok"
    assert len(verifier._cache) == 2


async def test_cached_principal_is_never_served_for_a_different_token() -> None:
    verifier = _two_issuers()
    alice = _sign(RSA_KEY)
    assert await _code(verifier, alice) == "ok"
    forged = _sign(PARTNER_KEY, tenant="globex")
    head, payload, _ = forged.split(".")
    spliced = f"{head}.{payload}.{alice.split('.')[2]}"  # globex claims, alice's signature
    assert await _code(verifier, spliced) == "token_invalid"
    assert await _code(verifier, spliced) == "token_invalid"
    result = await verifier.verify(alice, float(NOW))
    assert isinstance(result, Principal) and result.tenant == "acme"


def _raw(aud: str = '"gatekeeper"', tenant: str = '"acme"', exp: str = str(NOW + 60)) -> str:
    return f'{{"iss": "{ISS}", "aud": {aud}, "sub": "a", "tenant": {tenant}, "exp": {exp}}}'


@pytest.mark.parametrize("raw", [
    _raw(exp="1" + "0" * 5000),  # past Python's int-from-string limit
    _raw(aud='["gatekeeper", {"x": 1}]'),
    _raw(aud="7"),
    _raw(tenant='["acme"]'),
    _raw(tenant='{"name": "acme"}'),
    _raw(tenant='"acme\\u0000"'),
    _raw().replace('"sub": "a"', '"sub": "a", "sub": {"x": 1}'),  # duplicate: the last wins
], ids=range(7))
async def test_odd_signed_claims_are_refused_never_raised(raw: str) -> None:
    verifier = _two_issuers()
    assert await _code(verifier, _sign(RSA_KEY, raw_payload=raw)) in ("token_invalid",
                                                                     "credential_malformed")


@pytest.mark.parametrize("exp", ["NaN", "Infinity", "1e400"])
async def test_non_finite_exp_is_refused(exp: str) -> None:
    verifier = _two_issuers()
    raw = _raw(exp=exp)
    assert await _code(verifier, _sign(RSA_KEY, raw_payload=raw)) == "token_invalid"


async def test_jwt_through_the_middleware_never_reaches_the_app_when_forged() -> None:
    policy = {**POLICY, "jwt": {"issuers": {"corp": {
        "issuer": ISS, "audiences": ["gatekeeper"], "algorithms": ["RS256"],
        "public_keys": {"main": _pem(RSA_KEY)}}}}}
    env, recorder = await env_with_recorder(policy)
    forged = _sign(PARTNER_KEY, {"kid": "main"})
    alg_none = ".".join(forged.split(".")[:2]) + "."
    for token in (forged, alg_none, forged.replace(".", "..", 1), "gk_" + forged):
        assert (await call(env.gk, "/v1/models", [auth(token)]))[0] == 401, token
    # a key-shaped prefix never turns a JWT into a key or the other way round
    assert (await call(env.gk, "/v1/models", [(b"api-key", forged.encode())]))[1] == (
        "token_invalid")
    assert recorder.paths == []


# --- secrets never leak ---------------------------------------------------------------------

@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG):
        yield caplog


async def test_no_secret_in_logs_or_bodies(all_logs: pytest.LogCaptureFixture) -> None:
    policy = {**POLICY, "jwt": {"issuers": {"corp": {
        "issuer": ISS, "audiences": ["gatekeeper"], "algorithms": ["RS256"],
        "public_keys": {"main": _pem(RSA_KEY)}}}}}
    env, _ = await env_with_recorder(policy)
    key = env.keys["acme"]
    wrong_secret = build_key(env.ids["acme"], "Q" * 32)
    forged = _sign(PARTNER_KEY, {"kid": "main"})
    good_jwt = _sign(RSA_KEY)
    bodies: list[str] = []
    for headers, client in (
            ([auth(wrong_secret)], OFFICE),
            ([auth(key)], ("203.0.113.9", 1)),
            ([auth(forged)], OFFICE),
            ([auth(good_jwt), (b"x-tenant-id", b"globex")], OFFICE),
            ([auth(key), (b"x-api-key", wrong_secret.encode())], OFFICE),
            ([(b"x-forwarded-for", good_jwt.encode()), auth(good_jwt)], PROXY)):
        sent = await asgi_request(env.gk, "/v1/models", headers, client=client)
        assert sent[0]["status"] >= 400
        bodies.append(b"".join(m.get("body", b"") for m in sent[1:]).decode())
    text = "\n".join([*bodies, *(r.getMessage() for r in all_logs.records),
                      *(str(r.args) for r in all_logs.records)])
    assert all_logs.records, "expected audit lines"
    for secret in (key[15:47], wrong_secret[15:47], forged.split(".")[2],
                   good_jwt.split(".")[2], PEPPER.decode()):
        assert secret not in text
    for secret in (key[15:47], wrong_secret[15:47], forged.split(".")[2][:40]):
        assert secret[:20] not in text  # not even a prefix


async def test_a_key_in_a_malformed_forwarding_hop_is_not_written_to_the_audit_log(
        all_logs: pytest.LogCaptureFixture) -> None:
    env, recorder = await env_with_recorder()
    key = env.keys["acme"]
    headers = [auth(key), (b"x-forwarded-for", key.encode())]
    assert await call(env.gk, "/v1/models", headers, client=PROXY) == (400, "forwarded_malformed")
    assert recorder.paths == []
    assert all(key[15:47] not in r.getMessage() for r in all_logs.records)


# --- bounded caches --------------------------------------------------------------------------

def test_parse_ip_cache_is_bounded_whatever_is_sent() -> None:
    for i in range(networks_module._CACHE_MAX + 5000):
        networks_module.parse_ip(f"2001:db8::{i % 65536:x}%{i}")
    assert len(networks_module._cache) <= networks_module._CACHE_MAX


def test_credential_parse_cache_is_bounded_and_skips_long_values() -> None:
    for i in range(credentials_module._SINGLE_MAX + 100):
        credential_from([(b"x-api-key", f"garbage-{i}".encode())])
    assert len(credentials_module._single) <= credentials_module._SINGLE_MAX
    credentials_module._single.clear()
    credential_from([(b"authorization", b"Bearer " + b"a.b." + b"c" * 5000)])
    assert credentials_module._single == {}


async def test_refusal_cache_for_forged_keys_is_bounded() -> None:
    store = MemoryStore()
    authenticator = Authenticator(store, PEPPER, cache_ttl=60.0, cache_size=50)
    for i in range(500):
        token = build_key(f"{i:012d}", "s" * 32)
        credential = credential_from([(b"x-api-key", token.encode())])
        assert isinstance(credential, Credential)
        result = await authenticator.authenticate(credential, float(NOW))
        assert isinstance(result, Refusal) and result.reason.code == "key_unknown"
    assert len(authenticator._unknown) <= 50
    assert authenticator._cache == {}
