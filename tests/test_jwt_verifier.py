"""JWT verification and the ``jwt:`` policy section: real keys, real tokens, a real JWKS server.

Every refusal is checked by its reason code; time is the ``now`` handed to ``verify``, never the
wall clock. Configuration mistakes must be caught at load, each naming its dotted field.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from gatekeeper import (
    ConfigError,
    CredentialKind,
    JwtVerifier,
    ManualClock,
    PolicyError,
    Principal,
    Refusal,
    compile_policy,
)
from gatekeeper.jwt_verifier import JWKS_FETCH_DEADLINE, JWKS_REFETCH_INTERVAL
from tests.conftest import SteppingClock

NOW = 1_800_000_000
ISS = "https://sso.example.test/"
AUD = "gatekeeper"
HS_ENV = "CORP_JWT_SECRET"
HS_SECRET = "hmac-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
DROP: Any = object()
"""A claim value meaning: leave this claim out of the token."""

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_KEY_2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ATTACKER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()


# --- helpers --------------------------------------------------------------------------------

def public_pem(key: Any) -> str:
    data: bytes = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return data.decode()


def private_pem(key: Any, fmt: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8,
                ) -> str:
    data: bytes = key.private_bytes(serialization.Encoding.PEM, fmt,
                                    serialization.NoEncryption())
    return data.decode()


def public_jwk(key: Any, kid: str | None, **extra: str) -> dict[str, Any]:
    pub = key.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        jwk = RSAAlgorithm.to_jwk(pub, as_dict=True)
    elif isinstance(pub, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(pub, as_dict=True)
    else:
        jwk = OKPAlgorithm.to_jwk(pub, as_dict=True)
    if kid is not None:
        jwk["kid"] = kid
    jwk.update(extra)
    return dict(jwk)


def claims(**overrides: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"iss": ISS, "aud": AUD, "sub": "alice", "tenant": "acme",
                           "iat": NOW, "exp": NOW + 300}
    out.update(overrides)
    return {k: v for k, v in out.items() if v is not DROP}


def sign(key: Any, alg: str = "RS256", kid: str | None = None, **overrides: Any) -> str:
    """A really signed token; the claims go in as given (PyJWT's encoder would vet them)."""
    headers = {"kid": kid} if kid is not None else None
    payload = json.dumps(claims(**overrides)).encode()
    return jwt.api_jws.encode(payload, key, algorithm=alg, headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_token(header: dict[str, Any], payload: dict[str, Any], hmac_key: bytes | None = None,
               ) -> str:
    """A token built without PyJWT (which refuses to make the forgeries tested here)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = b"" if hmac_key is None else hmac.new(
        hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def issuer(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"issuer": ISS, "audiences": [AUD], "algorithms": ["RS256"]}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not DROP}


def rsa_issuer(**fields: Any) -> dict[str, Any]:
    return issuer(public_keys={"main": public_pem(RSA_KEY)}, **fields)


def verifier_for(cfg: dict[str, Any], name: str = "corp",
                 environ: dict[str, str] | None = None) -> JwtVerifier:
    """A verifier on a ManualClock, which ``accepted`` and ``refused`` set to their ``now``."""
    policy = compile_policy({"jwt": {"issuers": {name: cfg}}})
    assert len(policy.issuers) == 1
    return JwtVerifier(policy.issuers, environ=environ if environ is not None else {},
                       clock=ManualClock(NOW))


async def check(verifier: JwtVerifier, token: str, now: float) -> Principal | Refusal:
    if isinstance(verifier.clock, ManualClock):
        verifier.clock.set(float(now))
    return await verifier.verify(token, float(now))


async def accepted(verifier: JwtVerifier, token: str, now: float = NOW) -> Principal:
    result = await check(verifier, token, now)
    assert isinstance(result, Principal), result
    return result


async def refused(verifier: JwtVerifier, token: str, code: str, now: float = NOW) -> Refusal:
    result = await check(verifier, token, now)
    assert isinstance(result, Refusal), result
    assert result.reason.code == code, (result.reason.code, result.detail)
    return result


def config_errors(cfg: dict[str, Any], name: str = "corp") -> list[ConfigError]:
    with pytest.raises(PolicyError) as info:
        compile_policy({"jwt": {"issuers": {name: cfg}}})
    assert info.value.errors
    return list(info.value.errors)


def error_for(errors: list[ConfigError], field: str) -> ConfigError:
    found = [e for e in errors if e.field == field]
    assert found, f"no error for {field!r} in {[e.field for e in errors]}"
    return found[0]


# --- accepted tokens ------------------------------------------------------------------------

@pytest.mark.anyio
async def test_rs256_with_pem_public_key_is_accepted() -> None:
    verifier = verifier_for(rsa_issuer())
    principal = await accepted(verifier, sign(RSA_KEY, "RS256"))
    assert principal.kind is CredentialKind.JWT
    assert principal.key_id == "jwt:corp:alice"
    assert principal.tenant == "acme"
    assert principal.expires_at == NOW + 300 + 30  # exp + default leeway


@pytest.mark.anyio
async def test_es256_with_inline_jwks_is_accepted() -> None:
    cfg = issuer(algorithms=["ES256"], jwks={"keys": [public_jwk(EC_KEY, "ec-1")]})
    verifier = verifier_for(cfg, name="ec-sso")
    principal = await accepted(verifier, sign(EC_KEY, "ES256", kid="ec-1", tenant="globex"))
    assert (principal.key_id, principal.tenant) == ("jwt:ec-sso:alice", "globex")


@pytest.mark.anyio
async def test_eddsa_with_jwks_file_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [public_jwk(ED_KEY, "ed-1")]}), encoding="utf-8")
    verifier = verifier_for(issuer(algorithms=["EdDSA"], jwks_file=str(path), leeway=5))
    principal = await accepted(verifier, sign(ED_KEY, "EdDSA", kid="ed-1", sub="bob"))
    assert (principal.key_id, principal.tenant) == ("jwt:corp:bob", "acme")
    assert principal.expires_at == NOW + 300 + 5


@pytest.mark.anyio
async def test_hs256_with_secret_from_environment_is_accepted() -> None:
    verifier = verifier_for(issuer(algorithms=["HS256"], secret_env=HS_ENV),
                            environ={HS_ENV: HS_SECRET})
    principal = await accepted(verifier, sign(HS_SECRET.encode(), "HS256", sub="svc-batch"))
    assert (principal.key_id, principal.tenant) == ("jwt:corp:svc-batch", "acme")
    forged = sign(b"another-secret-of-enough-length-0123456789", "HS256")
    await refused(verifier, forged, "token_invalid")


@pytest.mark.anyio
async def test_custom_tenant_and_subject_claims() -> None:
    verifier = verifier_for(rsa_issuer(tenant_claim="org", subject_claim="email"))
    token = sign(RSA_KEY, org="initech", email="carol@example.test", tenant="acme")
    principal = await accepted(verifier, token)
    assert (principal.key_id, principal.tenant) == ("jwt:corp:carol@example.test", "initech")
    # the default claims are not consulted once others are configured
    await refused(verifier, sign(RSA_KEY, org=DROP, email="carol@example.test"), "token_invalid")


@pytest.mark.anyio
async def test_audience_list_containing_ours_is_accepted() -> None:
    verifier = verifier_for(rsa_issuer(audiences=["other", AUD]))
    await accepted(verifier, sign(RSA_KEY, aud=["billing", AUD]))


# --- time -----------------------------------------------------------------------------------

@pytest.mark.anyio
async def test_expired_token_is_refused_but_accepted_inside_leeway() -> None:
    verifier = verifier_for(rsa_issuer(leeway=30))
    inside = await accepted(verifier, sign(RSA_KEY, exp=NOW - 29))
    assert inside.expires_at == NOW + 1
    await refused(verifier, sign(RSA_KEY, exp=NOW - 30), "token_expired")
    await refused(verifier, sign(RSA_KEY, exp=NOW - 3600), "token_expired")


@pytest.mark.anyio
async def test_time_is_the_callers_now_not_the_wall_clock() -> None:
    verifier = verifier_for(rsa_issuer(leeway=0))
    token = sign(RSA_KEY, iat=NOW, exp=NOW + 60)
    await refused(verifier, token, "token_expired", now=NOW + 60)
    await accepted(verifier, token, now=NOW + 59)


@pytest.mark.anyio
async def test_nbf_and_iat_in_the_future_are_refused() -> None:
    verifier = verifier_for(rsa_issuer(leeway=30))
    await refused(verifier, sign(RSA_KEY, nbf=NOW + 3600), "token_invalid")
    await refused(verifier, sign(RSA_KEY, nbf=NOW + 31), "token_invalid")
    await accepted(verifier, sign(RSA_KEY, nbf=NOW + 30, sub="skew"))
    await refused(verifier, sign(RSA_KEY, iat=NOW + 3600), "token_invalid")
    await refused(verifier, sign(RSA_KEY, nbf="tomorrow"), "token_invalid")


@pytest.mark.anyio
@pytest.mark.parametrize("exp", [DROP, "2030-01-01", None, True])
async def test_missing_or_non_numeric_exp_is_refused(exp: Any) -> None:
    verifier = verifier_for(rsa_issuer())
    await refused(verifier, sign(RSA_KEY, exp=exp), "token_invalid")


@pytest.mark.anyio
@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
@pytest.mark.parametrize("value", [10**400, -(10**400), 10**20, 1e300, -1e300],
                         ids=["1e400", "-1e400", "1e20", "1e300-float", "-1e300-float"])
async def test_time_claims_beyond_year_9999_are_invalid_not_a_crash(claim: str,
                                                                    value: float) -> None:
    """10**400 overflowed math.isfinite (a 503 and a traceback); 1e300 never expired."""
    verifier = verifier_for(rsa_issuer())
    bad: dict[str, Any] = {claim: value}
    good: dict[str, Any] = {claim: NOW - 10 if claim != "exp" else NOW + 1}
    await refused(verifier, sign(RSA_KEY, **bad), "token_invalid")
    await accepted(verifier, sign(RSA_KEY, **good))


# --- wrong issuer, audience, algorithm, key -------------------------------------------------

@pytest.mark.anyio
@pytest.mark.parametrize("aud", ["someone-else", ["a", "b"], DROP, "gatekeeper-staging"])
async def test_wrong_or_missing_audience_is_refused(aud: Any) -> None:
    verifier = verifier_for(rsa_issuer())
    await refused(verifier, sign(RSA_KEY, aud=aud), "token_invalid")


@pytest.mark.anyio
@pytest.mark.parametrize("iss", ["https://evil.example.test/", "https://sso.example.test",
                                 ISS.upper(), DROP, ["https://sso.example.test/"], 7])
async def test_wrong_or_unknown_issuer_is_refused(iss: Any) -> None:
    verifier = verifier_for(rsa_issuer())
    await refused(verifier, sign(RSA_KEY, iss=iss), "token_invalid")


@pytest.mark.anyio
@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
async def test_alg_none_is_refused(alg: str) -> None:
    verifier = verifier_for(rsa_issuer())
    token = hand_token({"alg": alg, "typ": "JWT"}, claims())
    assert token.endswith(".")  # really unsigned
    await refused(verifier, token, "token_invalid")
    assert verifier.verifications == 0  # refused before any key is touched


@pytest.mark.anyio
async def test_hs256_signed_with_the_rsa_public_key_is_refused() -> None:
    """HS/RS confusion: the issuer's public PEM (which anyone has) used as an HMAC secret."""
    pem = public_pem(RSA_KEY).encode()
    verifier = verifier_for(rsa_issuer())
    for secret in (pem, pem.strip()):
        token = hand_token({"alg": "HS256", "typ": "JWT"}, claims(), hmac_key=secret)
        await refused(verifier, token, "token_invalid")
    assert verifier.verifications == 0


@pytest.mark.anyio
async def test_hs256_with_rsa_pem_is_refused_for_jwks_issuer_too() -> None:
    jwk = public_jwk(RSA_KEY, "k1")
    verifier = verifier_for(issuer(jwks={"keys": [jwk]}))
    token = hand_token({"alg": "HS256", "kid": "k1"}, claims(),
                       hmac_key=public_pem(RSA_KEY).encode())
    await refused(verifier, token, "token_invalid")
    await accepted(verifier, sign(RSA_KEY, kid="k1"))


@pytest.mark.anyio
async def test_algorithm_not_pinned_for_issuer_is_refused() -> None:
    verifier = verifier_for(rsa_issuer())  # RS256 only
    await refused(verifier, sign(RSA_KEY, "RS512"), "token_invalid")
    await refused(verifier, sign(RSA_KEY, "PS256"), "token_invalid")
    await refused(verifier, sign(EC_KEY, "ES256"), "token_invalid")


@pytest.mark.anyio
async def test_token_signed_by_an_attacker_key_is_refused() -> None:
    verifier = verifier_for(issuer(public_keys={"main": public_pem(RSA_KEY)}))
    await refused(verifier, sign(ATTACKER_KEY), "token_invalid")
    await refused(verifier, sign(ATTACKER_KEY, kid="main"), "token_invalid")
    assert verifier.verifications == 2  # both reached the signature check and failed it


@pytest.mark.anyio
async def test_tampered_payload_is_refused() -> None:
    verifier = verifier_for(rsa_issuer())
    header, _, signature = sign(RSA_KEY).split(".")
    evil = b64(json.dumps(claims(tenant="globex")).encode())
    await refused(verifier, f"{header}.{evil}.{signature}", "token_invalid")


# --- claims ---------------------------------------------------------------------------------

@pytest.mark.anyio
@pytest.mark.parametrize("overrides", [
    {"tenant": DROP},
    {"tenant": ""},
    {"tenant": 42},
    {"tenant": "../globex"},
    {"tenant": "a" * 65},
    {"sub": DROP},
    {"sub": 12345},
    {"sub": ""},
    {"sub": ["alice"]},
    {"sub": "x" * 257},
], ids=lambda o: next(iter(o)) + "=" + repr(next(iter(o.values())))[:12])
async def test_missing_or_bad_identity_claims_are_refused(overrides: dict[str, Any]) -> None:
    verifier = verifier_for(rsa_issuer())
    await refused(verifier, sign(RSA_KEY, **overrides), "token_invalid")


# --- garbage --------------------------------------------------------------------------------

GARBAGE = [
    "a.b.c",
    "x.y",
    "",
    ".",
    "..",
    "...",
    "not a token at all",
    "!!!.???.###",
    "\u00e9\u00e9.\u00e9\u00e9.\u00e9\u00e9",
    "eyJhbGciOiJSUzI1NiJ9.%%%%.abc",
    b64(b"[1, 2]") + "." + b64(b"{}") + ".sig",       # header is not an object
    b64(b'{"alg":"RS256"}') + "." + b64(b"not json") + ".sig",
    b64(b'{"alg":"RS256"}') + "." + b64(b'"a string"') + ".sig",
    b64(b"[" * 5000) + "." + b64(b"{}") + ".sig",      # nesting deeper than the recursion limit
    b64(b'{"alg":"RS256","kid":{"x":1}}') + "." + b64(b"{}") + ".sig",
]


@pytest.mark.anyio
@pytest.mark.parametrize("token", GARBAGE, ids=range(len(GARBAGE)))
async def test_garbage_is_malformed_and_never_raises(token: str) -> None:
    verifier = verifier_for(rsa_issuer())
    await refused(verifier, token, "credential_malformed")
    assert verifier.verifications == 0


@pytest.mark.anyio
async def test_well_formed_but_unsigned_garbage_is_invalid_not_an_exception() -> None:
    verifier = verifier_for(rsa_issuer())
    no_alg = hand_token({"typ": "JWT"}, claims())
    bad_sig = sign(RSA_KEY)[:-10] + "AAAAAAAAAA"
    list_alg = hand_token({"alg": ["RS256"]}, claims())
    for token in (no_alg, bad_sig, list_alg):
        await refused(verifier, token, "token_invalid")


# --- cache and key selection ----------------------------------------------------------------

@pytest.mark.anyio
async def test_verified_token_is_cached() -> None:
    verifier = verifier_for(rsa_issuer())
    token = sign(RSA_KEY)
    first = await accepted(verifier, token)
    second = await accepted(verifier, token, now=NOW + 10)
    assert second == first
    assert verifier.verifications == 1
    await accepted(verifier, sign(RSA_KEY, sub="bob"))
    assert verifier.verifications == 2


@pytest.mark.anyio
async def test_refused_tokens_are_not_cached() -> None:
    verifier = verifier_for(rsa_issuer())
    token = sign(ATTACKER_KEY)
    await refused(verifier, token, "token_invalid")
    await refused(verifier, token, "token_invalid")
    assert verifier.verifications == 2


@pytest.mark.anyio
async def test_cache_is_bounded() -> None:
    policy = compile_policy({"jwt": {"issuers": {"corp": rsa_issuer()}}})
    verifier = JwtVerifier(policy.issuers, cache_size=2, environ={})
    tokens = [sign(RSA_KEY, sub=f"user-{i}") for i in range(3)]
    for token in tokens:
        await accepted(verifier, token)
    await accepted(verifier, tokens[2])
    assert verifier.verifications == 3
    await accepted(verifier, tokens[0])  # evicted first, so verified again
    assert verifier.verifications == 4


@pytest.mark.anyio
async def test_kid_selects_among_several_keys() -> None:
    verifier = verifier_for(issuer(public_keys={"k1": public_pem(RSA_KEY),
                                                "k2": public_pem(RSA_KEY_2)}))
    one = await accepted(verifier, sign(RSA_KEY, kid="k1", sub="one"))
    two = await accepted(verifier, sign(RSA_KEY_2, kid="k2", sub="two"))
    assert (one.key_id, two.key_id) == ("jwt:corp:one", "jwt:corp:two")
    await refused(verifier, sign(RSA_KEY_2, kid="k1"), "token_invalid")  # kid/key mismatch
    await refused(verifier, sign(RSA_KEY, kid="k3"), "token_invalid")    # unknown kid
    await refused(verifier, sign(RSA_KEY), "token_invalid")              # ambiguous: no kid


@pytest.mark.anyio
async def test_single_key_serves_tokens_without_kid_only() -> None:
    verifier = verifier_for(issuer(public_keys={"main": public_pem(RSA_KEY)}))
    await accepted(verifier, sign(RSA_KEY))
    await accepted(verifier, sign(RSA_KEY, kid="main", sub="bob"))
    await refused(verifier, sign(RSA_KEY, kid="other", sub="carol"), "token_invalid")


@pytest.mark.anyio
async def test_two_issuers_are_chosen_by_iss() -> None:
    other_iss = "https://login.partner.test"
    policy = compile_policy({"jwt": {"issuers": {
        "corp": rsa_issuer(),
        "partner": issuer(issuer=other_iss, algorithms=["ES256"],
                          public_keys={"p": public_pem(EC_KEY)}),
    }}})
    verifier = JwtVerifier(policy.issuers, environ={})
    corp = await accepted(verifier, sign(RSA_KEY))
    partner = await accepted(verifier, sign(EC_KEY, "ES256", iss=other_iss))
    assert (corp.key_id, partner.key_id) == ("jwt:corp:alice", "jwt:partner:alice")
    # the partner's key does not vouch for corp tokens, nor the other way round
    await refused(verifier, sign(EC_KEY, "ES256"), "token_invalid")
    await refused(verifier, sign(RSA_KEY, iss=other_iss), "token_invalid")


# --- JWKS over HTTP -------------------------------------------------------------------------

class JwksServer:
    """A real HTTP server handing out a JWKS document, counting the requests it serves.

    ``hang`` holds each request without answering; ``trickle`` sends the body one byte per that
    many seconds. Both stop when ``release`` is set (the fixture sets it on teardown).
    """

    def __init__(self) -> None:
        self.document = b'{"keys": []}'
        self.status = 200
        self.location: str | None = None
        self.requests = 0
        self.hang = False
        self.trickle: float | None = None
        self.release = threading.Event()
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with owner._lock:
                    owner.requests += 1
                    status, body = owner.status, owner.document
                if owner.hang:
                    owner.release.wait(30)
                    return
                self.send_response(status)
                if owner.location:
                    self.send_header("location", owner.location)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                if owner.trickle is None:
                    self.wfile.write(body)
                    return
                for i in range(len(body)):
                    if owner.release.wait(owner.trickle):
                        return
                    self.wfile.write(body[i:i + 1])
                    self.wfile.flush()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def serve(self, *jwks: dict[str, Any]) -> None:
        with self._lock:
            self.document = json.dumps({"keys": list(jwks)}).encode()

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.stop()


async def settled(verifier: JwtVerifier) -> None:
    """Wait until the verifier's background JWKS refreshes have finished."""
    with anyio.fail_after(10):
        while verifier._refreshes:
            await anyio.sleep(0.005)


async def check_together(verifier: JwtVerifier, tokens: list[str],
                         now: float) -> tuple[list[Principal | Refusal], float]:
    """Every token checked at once, as concurrent requests are: (results, seconds taken)."""
    results: list[Principal | Refusal] = []

    async def one(token: str) -> None:
        results.append(await check(verifier, token, now))

    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        for token in tokens:
            tg.start_soon(one, token)
    return results, time.monotonic() - started


async def eventually(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    with anyio.fail_after(seconds):
        while not condition():
            await anyio.sleep(0.005)


def url_verifier(url: str, **fields: Any) -> JwtVerifier:
    return verifier_for(issuer(jwks_url=url, **fields))


@pytest.mark.anyio
async def test_jwks_url_is_fetched_once_for_tokens_with_a_known_kid(
        jwks_server: JwksServer) -> None:
    jwks_server.serve(public_jwk(RSA_KEY, "k1"))
    verifier = url_verifier(jwks_server.url)
    assert jwks_server.requests == 0  # nothing is fetched before a token needs it
    principal = await accepted(verifier, sign(RSA_KEY, kid="k1"))
    assert principal.key_id == "jwt:corp:alice"
    assert jwks_server.requests == 1
    await accepted(verifier, sign(RSA_KEY, kid="k1", sub="bob"), now=NOW + 5)
    await accepted(verifier, sign(RSA_KEY, kid="k1", sub="carol"), now=NOW + 100)
    assert jwks_server.requests == 1


@pytest.mark.anyio
async def test_concurrent_first_tokens_share_one_fetch(jwks_server: JwksServer) -> None:
    jwks_server.serve(public_jwk(RSA_KEY, "k1"))
    verifier = url_verifier(jwks_server.url)
    results: list[object] = []

    async def check(i: int) -> None:
        results.append(await verifier.verify(sign(RSA_KEY, kid="k1", sub=f"u{i}"), NOW))

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(check, i)
    assert len(results) == 20
    assert all(isinstance(r, Principal) for r in results), results
    assert jwks_server.requests == 1


@pytest.mark.anyio
async def test_unknown_kid_refetches_at_most_once_per_interval(jwks_server: JwksServer) -> None:
    assert JWKS_REFETCH_INTERVAL == 30.0
    jwks_server.serve(public_jwk(RSA_KEY, "k1"))
    verifier = url_verifier(jwks_server.url)
    await accepted(verifier, sign(RSA_KEY, kid="k1"))
    assert jwks_server.requests == 1
    # a flood of unknown kids within 30 s of the last fetch does not reach the IdP
    for i in range(1, 30):
        await refused(verifier, sign(ATTACKER_KEY, kid=f"ghost-{i}"), "token_invalid",
                      now=NOW + i)
    assert jwks_server.requests == 1
    # past the interval one unknown kid may refetch, and then the next 30 s are quiet again
    await refused(verifier, sign(ATTACKER_KEY, kid="ghost-a"), "token_invalid", now=NOW + 31)
    assert jwks_server.requests == 2
    for i in range(32, 61):
        await refused(verifier, sign(ATTACKER_KEY, kid=f"ghost-{i}"), "token_invalid",
                      now=NOW + i)
    assert jwks_server.requests == 2
    await refused(verifier, sign(ATTACKER_KEY, kid="ghost-b"), "token_invalid", now=NOW + 62)
    assert jwks_server.requests == 3
    # known keys kept working throughout
    await accepted(verifier, sign(RSA_KEY, kid="k1", sub="bob"), now=NOW + 62)


@pytest.mark.anyio
async def test_key_rotation_is_picked_up(jwks_server: JwksServer) -> None:
    jwks_server.serve(public_jwk(RSA_KEY, "old"))
    verifier = url_verifier(jwks_server.url)
    old_token = sign(RSA_KEY, kid="old", exp=NOW + 3600)
    await accepted(verifier, old_token)
    jwks_server.serve(public_jwk(RSA_KEY_2, "new"))
    new_token = sign(RSA_KEY_2, kid="new", sub="bob", exp=NOW + 3600)
    # inside the refetch interval the new kid is not known yet
    await refused(verifier, new_token, "token_invalid", now=NOW + 10)
    assert jwks_server.requests == 1
    principal = await accepted(verifier, new_token, now=NOW + 31)
    assert principal.key_id == "jwt:corp:bob"
    assert jwks_server.requests == 2
    # the retired key is gone from the set: a fresh token under it no longer verifies
    await refused(verifier, sign(RSA_KEY, kid="old", sub="carol", exp=NOW + 3600),
                  "token_invalid", now=NOW + 32)
    assert jwks_server.requests == 2
    # and a token verified under it before the rotation is not served from the cache any more
    await refused(verifier, old_token, "token_invalid", now=NOW + 33)


@pytest.mark.anyio
async def test_stale_jwks_is_refreshed_and_still_serves_when_the_refresh_fails(
        jwks_server: JwksServer) -> None:
    jwks_server.serve(public_jwk(RSA_KEY, "k1"))
    verifier = url_verifier(jwks_server.url, jwks_cache_ttl=60)

    def token(sub: str, t: float) -> str:
        return sign(RSA_KEY, kid="k1", sub=sub, exp=t + 300)

    await accepted(verifier, token("a", NOW))
    await accepted(verifier, token("b", NOW + 59), now=NOW + 59)
    assert jwks_server.requests == 1
    await accepted(verifier, token("c", NOW + 60), now=NOW + 60)  # stale: refetched
    await settled(verifier)
    assert jwks_server.requests == 2
    jwks_server.status = 500
    await accepted(verifier, token("d", NOW + 121), now=NOW + 121)
    await settled(verifier)
    assert jwks_server.requests == 3  # tried, failed, the known key still serves
    await accepted(verifier, token("e", NOW + 121.5), now=NOW + 121.5)
    await settled(verifier)
    assert jwks_server.requests == 3  # and a failure is not retried before its back-off


@pytest.mark.anyio
async def test_jwks_server_error_is_auth_unavailable_until_it_recovers(
        jwks_server: JwksServer) -> None:
    jwks_server.status = 503
    verifier = url_verifier(jwks_server.url)
    token = sign(RSA_KEY, kid="k1", exp=NOW + 3600)
    await refused(verifier, token, "auth_unavailable")
    assert jwks_server.requests == 1
    await refused(verifier, token, "auth_unavailable", now=NOW + 0.5)
    assert jwks_server.requests == 1  # backing off
    jwks_server.status = 200
    jwks_server.serve(public_jwk(RSA_KEY, "k1"))
    await accepted(verifier, token, now=NOW + 31)
    assert jwks_server.requests == 2


@pytest.mark.anyio
async def test_jwks_without_usable_keys_is_auth_unavailable(jwks_server: JwksServer) -> None:
    # an EC key and an encryption key: neither may verify an RS256 issuer's tokens
    jwks_server.serve(public_jwk(EC_KEY, "ec"), public_jwk(RSA_KEY, "enc", use="enc"))
    verifier = url_verifier(jwks_server.url)
    await refused(verifier, sign(RSA_KEY, kid="enc"), "auth_unavailable")
    jwks_server.document = b"<html>not json</html>"
    await refused(verifier, sign(RSA_KEY, kid="enc"), "auth_unavailable", now=NOW + 31)
    assert jwks_server.requests == 2


@pytest.mark.anyio
async def test_jwks_redirects_are_not_followed(jwks_server: JwksServer) -> None:
    # a redirect could take an https JWKS URL to plain http, or to a document an attacker serves
    other = JwksServer()
    other.thread.start()
    try:
        other.serve(public_jwk(RSA_KEY, "k1"))
        jwks_server.status, jwks_server.location = 302, other.url
        verifier = url_verifier(jwks_server.url)
        await refused(verifier, sign(RSA_KEY, kid="k1"), "auth_unavailable")
        assert (jwks_server.requests, other.requests) == (1, 0)
    finally:
        other.stop()


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.anyio
async def test_dead_jwks_server_is_auth_unavailable() -> None:
    verifier = url_verifier(f"http://127.0.0.1:{closed_port()}/jwks.json")
    token = sign(RSA_KEY, kid="k1", exp=NOW + 3600)
    result = await refused(verifier, token, "auth_unavailable")
    assert result.reason.status == 503
    # while no key is known, later tokens say the same, whether or not a refetch is due
    await refused(verifier, sign(RSA_KEY, kid="k1", sub="bob"), "auth_unavailable", now=NOW + 1)
    await refused(verifier, token, "auth_unavailable", now=NOW + 40)
    assert verifier.verifications == 0


@pytest.mark.anyio
async def test_a_known_kid_is_verified_at_once_while_a_stale_jwks_refresh_hangs(
        jwks_server: JwksServer) -> None:
    jwks_server.serve(public_jwk(RSA_KEY, "k1"))
    verifier = url_verifier(jwks_server.url)
    await accepted(verifier, sign(RSA_KEY, kid="k1"))
    jwks_server.hang = True
    later = NOW + 601  # past jwks_cache_ttl: the document is stale and is refetched
    tokens = [sign(RSA_KEY, kid="k1", sub=f"u{i}", exp=later + 300) for i in range(20)]
    results, elapsed = await check_together(verifier, tokens, later)
    assert all(isinstance(r, Principal) for r in results) and len(results) == 20, results
    # not held by the hung fetch (it was 5 s and more; waiting would take the 2.5 s deadline)
    assert elapsed < JWKS_FETCH_DEADLINE * 0.8, elapsed
    await eventually(lambda: jwks_server.requests == 2)  # one refresh in the background ...
    await accepted(verifier, sign(RSA_KEY, kid="k1", sub="v", exp=later + 300), now=later + 1)
    assert jwks_server.requests == 2  # ... and only one while it hangs


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["hang", "trickle"])
async def test_an_unknown_kid_waits_at_most_the_fetch_deadline(jwks_server: JwksServer,
                                                               how: str) -> None:
    jwks_server.serve(public_jwk(RSA_KEY, "k1"))
    if how == "hang":
        jwks_server.hang = True
    else:
        jwks_server.trickle = 0.05  # a byte each 50 ms, each socket read well inside a timeout
    verifier = url_verifier(jwks_server.url)
    tokens = [sign(RSA_KEY, kid="k1", sub=f"u{i}") for i in range(10)]
    results, elapsed = await check_together(verifier, tokens, NOW)
    codes = {r.reason.code if isinstance(r, Refusal) else "ok" for r in results}
    assert codes == {"auth_unavailable"}, results
    assert elapsed < JWKS_FETCH_DEADLINE + 1.0, elapsed
    assert jwks_server.requests == 1  # ten tokens, one fetch
    await settled(verifier)


@pytest.mark.anyio
async def test_a_failing_jwks_server_is_retried_with_exponential_back_off(
        jwks_server: JwksServer) -> None:
    jwks_server.status = 503
    verifier = url_verifier(jwks_server.url)
    fetched_at: list[float] = []
    for step in range(0, 130 * 4):  # a token every 250 ms for 130 s
        seconds = step / 4
        before = jwks_server.requests
        await refused(verifier, sign(RSA_KEY, kid="k1", sub=f"u{step}"), "auth_unavailable",
                      now=NOW + seconds)
        if jwks_server.requests != before:
            fetched_at.append(seconds)
    assert fetched_at == [0, 1, 3, 7, 15, 31, 63, 123]  # 1 s doubling, at most 60 s apart
    jwks_server.status = 200
    jwks_server.serve(public_jwk(RSA_KEY, "k1"))
    await refused(verifier, sign(RSA_KEY, kid="k1"), "auth_unavailable", now=NOW + 182)
    await accepted(verifier, sign(RSA_KEY, kid="k1"), now=NOW + 183)
    assert jwks_server.requests == 9


@pytest.mark.anyio
async def test_a_token_whose_key_left_the_jwks_is_refused_once_the_document_is_refreshed(
        jwks_server: JwksServer) -> None:
    jwks_server.serve(public_jwk(RSA_KEY, "old"))
    verifier = url_verifier(jwks_server.url)
    old_token = sign(RSA_KEY, kid="old", exp=NOW + 3600)
    await accepted(verifier, old_token)
    jwks_server.serve(public_jwk(RSA_KEY_2, "new"))
    await accepted(verifier, old_token, now=NOW + 599)  # the document is still fresh
    assert jwks_server.requests == 1
    # past jwks_cache_ttl the same token, and nothing else, triggers the refresh ...
    await accepted(verifier, old_token, now=NOW + 601)
    await settled(verifier)
    assert jwks_server.requests == 2
    # ... after which it is verified again, and its key is gone
    await refused(verifier, old_token, "token_invalid", now=NOW + 602)
    assert verifier.verifications == 1  # "unknown key id": refused before any signature check
    await accepted(verifier, sign(RSA_KEY_2, kid="new", exp=NOW + 3600), now=NOW + 603)
    assert jwks_server.requests == 2


@pytest.mark.anyio
async def test_a_refresh_that_keeps_a_key_keeps_its_cached_tokens(
        jwks_server: JwksServer) -> None:
    jwks_server.serve(public_jwk(RSA_KEY, "k1"))
    verifier = url_verifier(jwks_server.url)
    token = sign(RSA_KEY, kid="k1", exp=NOW + 3600)
    await accepted(verifier, token)
    jwks_server.serve(public_jwk(RSA_KEY, "k1"), public_jwk(RSA_KEY_2, "k2"))
    await accepted(verifier, token, now=NOW + 601)
    await settled(verifier)
    assert jwks_server.requests == 2
    await accepted(verifier, token, now=NOW + 602)
    assert verifier.verifications == 1  # the same key came back: no second signature check


@pytest.mark.anyio
async def test_jwks_staleness_follows_the_monotonic_clock(jwks_server: JwksServer) -> None:
    jwks_server.serve(public_jwk(RSA_KEY, "k1"))
    clock = SteppingClock(NOW)
    policy = compile_policy({"jwt": {"issuers": {"corp": issuer(jwks_url=jwks_server.url)}}})
    verifier = JwtVerifier(policy.issuers, environ={}, clock=clock)
    token = sign(RSA_KEY, kid="k1", iat=NOW - 7200, exp=NOW + 3600)
    assert isinstance(await verifier.verify(token, clock.now()), Principal)
    clock.wall -= 3600  # the wall clock steps back an hour while 601 s pass
    clock.mono += 601
    assert isinstance(await verifier.verify(token, clock.now()), Principal)
    await settled(verifier)
    assert jwks_server.requests == 2


@pytest.mark.anyio
async def test_an_expired_token_leaves_the_cache() -> None:
    verifier = verifier_for(rsa_issuer(leeway=0))
    token = sign(RSA_KEY, exp=NOW + 60)
    await accepted(verifier, token)
    assert token in verifier._cache
    await refused(verifier, token, "token_expired", now=NOW + 60)
    assert token not in verifier._cache


# --- HMAC secrets ---------------------------------------------------------------------------

def hs_policy_issuers(*algorithms: str) -> Any:
    return compile_policy({"jwt": {"issuers": {
        "hs": issuer(algorithms=list(algorithms or ("HS256",)), secret_env=HS_ENV)}}}).issuers


def test_unset_secret_env_is_a_config_error_naming_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        JwtVerifier(hs_policy_issuers(), environ={})
    assert info.value.field == "jwt.issuers.hs.secret_env"
    assert HS_ENV not in str(info.value)  # *_env values are never echoed: may be a secret
    assert "not set" in str(info.value)
    with pytest.raises(ConfigError) as empty:
        JwtVerifier(hs_policy_issuers(), environ={HS_ENV: ""})
    assert empty.value.field == "jwt.issuers.hs.secret_env"


@pytest.mark.parametrize("secret", ["s3cr3t-value", "x" * 31, "\u00e9" * 15])
def test_short_secret_is_a_config_error_that_never_shows_the_secret(secret: str) -> None:
    with pytest.raises(ConfigError) as info:
        JwtVerifier(hs_policy_issuers(), environ={HS_ENV: secret})
    assert info.value.field == "jwt.issuers.hs.secret_env"
    assert secret not in str(info.value)
    assert secret not in repr(info.value.value)
    assert "32" in str(info.value)


@pytest.mark.anyio
async def test_secret_of_exactly_32_bytes_is_enough_for_hs256() -> None:
    secret = "k" * 32
    verifier = JwtVerifier(hs_policy_issuers("HS256"), environ={HS_ENV: secret})
    principal = await accepted(verifier, sign(secret.encode(), "HS256"))
    assert principal.key_id == "jwt:hs:alice"


def test_hs512_needs_a_secret_as_long_as_its_hash() -> None:
    """RFC 7518 3.2: a 32-byte secret is too short for HS512 (PyJWT warns on every token)."""
    secret = "k" * 63
    with pytest.raises(ConfigError) as info:
        JwtVerifier(hs_policy_issuers("HS256", "HS512"), environ={HS_ENV: secret})
    assert info.value.field == "jwt.issuers.hs.secret_env"
    assert "at least 64" in str(info.value)
    assert secret not in str(info.value)


@pytest.mark.anyio
async def test_hs512_with_a_64_byte_secret_verifies_only_pinned_algorithms() -> None:
    secret = "k" * 64
    verifier = JwtVerifier(hs_policy_issuers("HS256", "HS512"), environ={HS_ENV: secret})
    await accepted(verifier, sign(secret.encode(), "HS512"))
    await accepted(verifier, sign(secret.encode(), "HS256", sub="bob"))
    await refused(verifier, sign(secret.encode(), "HS384"), "token_invalid")  # not pinned


# --- configuration errors -------------------------------------------------------------------

@pytest.mark.parametrize(("algorithms", "field"), [
    (["none"], "jwt.issuers.corp.algorithms[0]"),
    (["RS256", "None"], "jwt.issuers.corp.algorithms[1]"),
    (["RS256", "XS999"], "jwt.issuers.corp.algorithms[1]"),
    (["HS256", "RS256"], "jwt.issuers.corp.algorithms"),
    (["ES256", "EdDSA"], "jwt.issuers.corp.algorithms"),
    ([], "jwt.issuers.corp.algorithms"),
])
def test_bad_algorithm_lists_are_refused(algorithms: list[str], field: str) -> None:
    error = error_for(config_errors(rsa_issuer(algorithms=algorithms)), field)
    if "none" in [a.lower() for a in algorithms]:
        assert "never allowed" in error.problem


def test_mixing_hmac_and_rsa_names_both_algorithms() -> None:
    error = error_for(config_errors(rsa_issuer(algorithms=["HS256", "RS256"])),
                      "jwt.issuers.corp.algorithms")
    assert "HS256" in str(error) and "RS256" in str(error)
    assert "mixes" in error.problem


def test_no_key_source_is_refused() -> None:
    error = error_for(config_errors(issuer()), "jwt.issuers.corp")
    assert "exactly one key source" in error.problem


def test_two_key_sources_are_refused() -> None:
    cfg = rsa_issuer(jwks_url="https://sso.example.test/jwks.json")
    error = error_for(config_errors(cfg), "jwt.issuers.corp")
    assert error.value == ["jwks_url", "public_keys"]


def test_secret_env_with_rsa_algorithms_is_refused() -> None:
    errors = config_errors(issuer(secret_env=HS_ENV))
    assert "RSA" in error_for(errors, "jwt.issuers.corp.secret_env").problem


def test_hmac_algorithms_with_public_keys_are_refused() -> None:
    errors = config_errors(rsa_issuer(algorithms=["HS256"]))
    assert "secret_env" in error_for(errors, "jwt.issuers.corp.algorithms").problem


def test_rsa_1024_public_key_is_refused() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    errors = config_errors(issuer(public_keys={"old": public_pem(weak)}))
    error = error_for(errors, "jwt.issuers.corp.public_keys.old")
    assert "1024 bits" in error.problem


def test_rsa_1024_jwk_is_refused() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    errors = config_errors(issuer(jwks={"keys": [public_jwk(weak, "old")]}))
    assert "1024" in error_for(errors, "jwt.issuers.corp.jwks.keys[0]").problem


def test_key_of_the_wrong_family_is_refused() -> None:
    errors = config_errors(issuer(public_keys={"ec": public_pem(EC_KEY)}))
    assert "RSA" in error_for(errors, "jwt.issuers.corp.public_keys.ec").problem


@pytest.mark.parametrize(("key", "fmt"), [
    (RSA_KEY, serialization.PrivateFormat.PKCS8),
    (RSA_KEY, serialization.PrivateFormat.TraditionalOpenSSL),
    (EC_KEY, serialization.PrivateFormat.PKCS8),
    (ED_KEY, serialization.PrivateFormat.OpenSSH),
], ids=["rsa-pkcs8", "rsa-traditional", "ec-pkcs8", "ed25519-openssh"])
def test_private_key_in_public_keys_is_refused_without_echoing_it(
        key: Any, fmt: serialization.PrivateFormat) -> None:
    pem = private_pem(key, fmt)
    with pytest.raises(PolicyError) as info:
        compile_policy({"jwt": {"issuers": {"corp": issuer(public_keys={"main": pem})}}})
    error = error_for(list(info.value.errors), "jwt.issuers.corp.public_keys.main")
    assert "private key" in error.problem
    body = "".join(pem.splitlines()[1:-1])
    for line in pem.splitlines()[1:-1]:
        assert line[:16] not in str(info.value)
    assert body[:16] not in repr(info.value.errors)


@pytest.mark.parametrize("where", ["public_key", "keys", "public_keys"])
def test_private_key_in_the_wrong_place_is_never_echoed(where: str) -> None:
    """A misspelt field or a bare string must not print the private key either."""
    pem = private_pem(ED_KEY)
    value: Any = pem if where == "public_keys" else {"main": pem}
    cfg = issuer(algorithms=["EdDSA"], **{where: value})
    with pytest.raises(PolicyError) as info:
        compile_policy({"jwt": {"issuers": {"corp": cfg}}})
    assert f"jwt.issuers.corp.{where}" in [e.field for e in info.value.errors]
    secret = pem.splitlines()[1]
    assert secret[:16] not in str(info.value)
    assert secret[20:36] not in str(info.value)
    assert secret[:16] not in repr([e.value for e in info.value.errors])


def test_public_keys_must_hold_valid_pem() -> None:
    errors = config_errors(issuer(public_keys={"a": "not a pem", "b": 7}))
    error_for(errors, "jwt.issuers.corp.public_keys.a")
    error_for(errors, "jwt.issuers.corp.public_keys.b")
    empty = config_errors(issuer(public_keys={}))
    assert "at least one key" in error_for(empty, "jwt.issuers.corp.public_keys").problem


def test_private_jwk_under_a_misspelt_field_is_not_echoed() -> None:
    private = dict(RSAAlgorithm.to_jwk(RSA_KEY, as_dict=True), kid="k1")
    errors = config_errors(issuer(public_keys={"a": public_pem(RSA_KEY)},
                                  jwk={"keys": [private]}))
    error = error_for(errors, "jwt.issuers.corp.jwk")
    assert private["d"][:8] not in str(error) and "(private key)" in str(error)


def test_private_jwk_in_inline_jwks_is_refused() -> None:
    private = dict(RSAAlgorithm.to_jwk(RSA_KEY, as_dict=True), kid="k1")
    errors = config_errors(issuer(jwks={"keys": [private]}))
    error = error_for(errors, "jwt.issuers.corp.jwks.keys[0]")
    assert private["d"][:16] not in str(error)


@pytest.mark.parametrize("audiences", [DROP, [], None])
def test_missing_audiences_are_refused(audiences: Any) -> None:
    error = error_for(config_errors(rsa_issuer(audiences=audiences)),
                      "jwt.issuers.corp.audiences")
    assert "at least one audience" in error.problem


def test_missing_issuer_is_refused() -> None:
    error = error_for(config_errors(rsa_issuer(issuer=DROP)), "jwt.issuers.corp.issuer")
    assert "required" in error.problem


@pytest.mark.parametrize("url", [
    "http://sso.example.test/jwks.json",
    "http://localhost.evil.test/jwks.json",
    "http://127.0.0.1.nip.io/jwks.json",
    "file:///etc/passwd",
    "ftp://sso.example.test/jwks.json",
    "https:///jwks.json",
    "sso.example.test/jwks.json",
])
def test_jwks_url_must_be_https_or_loopback_http(url: str) -> None:
    error = error_for(config_errors(issuer(jwks_url=url)), "jwt.issuers.corp.jwks_url")
    assert error.value == url


@pytest.mark.parametrize("url", ["https://sso.example.test/jwks.json",
                                 "http://127.0.0.1:8080/jwks.json",
                                 "http://localhost/jwks.json",
                                 "http://[::1]:9000/jwks.json"])
def test_jwks_url_accepted_forms(url: str) -> None:
    policy = compile_policy({"jwt": {"issuers": {"corp": issuer(jwks_url=url)}}})
    assert policy.issuers[0].jwks_url == url


def test_unreadable_jwks_file_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "absent.json"
    error_for(config_errors(issuer(jwks_file=str(missing))), "jwt.issuers.corp.jwks_file")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    error_for(config_errors(issuer(jwks_file=str(broken))), "jwt.issuers.corp.jwks_file")


def test_unknown_issuer_field_and_bad_numbers_are_refused() -> None:
    errors = config_errors(rsa_issuer(audience=AUD, leeway=1000, jwks_cache_ttl=True))
    error_for(errors, "jwt.issuers.corp.audience")
    error_for(errors, "jwt.issuers.corp.leeway")
    error_for(errors, "jwt.issuers.corp.jwks_cache_ttl")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1])
def test_leeway_must_be_a_finite_bounded_number(value: float) -> None:
    """A NaN leeway would make ``now >= exp + leeway`` false forever: tokens never expire."""
    error_for(config_errors(rsa_issuer(leeway=value)), "jwt.issuers.corp.leeway")


def test_two_issuers_with_the_same_iss_are_refused() -> None:
    with pytest.raises(PolicyError) as info:
        compile_policy({"jwt": {"issuers": {"a": rsa_issuer(), "b": rsa_issuer()}}})
    error = error_for(list(info.value.errors), "jwt.issuers.b.issuer")
    assert "jwt.issuers.a" not in error.field and "already the issuer of a" in error.problem


def test_all_issuer_errors_are_reported_together() -> None:
    with pytest.raises(PolicyError) as info:
        compile_policy({"jwt": {"issuers": {
            "one": issuer(algorithms=["none"], public_keys={"k": public_pem(RSA_KEY)}),
            "two": issuer(issuer="https://two.test/", audiences=[],
                          jwks_url="http://two.test/jwks"),
        }, "issuer": {}}})
    fields = {e.field for e in info.value.errors}
    assert {"jwt.issuers.one.algorithms[0]", "jwt.issuers.two.audiences",
            "jwt.issuers.two.jwks_url", "jwt.issuer"} <= fields


# --- issuers bound to tenants ---------------------------------------------------------------

@pytest.mark.anyio
async def test_an_issuer_bound_to_tenants_cannot_name_another() -> None:
    policy = compile_policy({"tenants": {"acme": {}, "globex": {}},
                             "jwt": {"issuers": {"corp": rsa_issuer(tenants=["acme"])}}})
    verifier = JwtVerifier(policy.issuers, environ={})
    assert (await accepted(verifier, sign(RSA_KEY, tenant="acme"))).tenant == "acme"
    result = await refused(verifier, sign(RSA_KEY, tenant="globex"), "token_invalid")
    assert "may not name tenant" in result.detail


def test_issuer_tenants_must_exist_in_the_policy() -> None:
    with pytest.raises(PolicyError) as info:
        compile_policy({"tenants": {"acme": {}},
                        "jwt": {"issuers": {"corp": rsa_issuer(tenants=["acme", "umbrella"])}}})
    error = error_for(list(info.value.errors), "jwt.issuers.corp.tenants[1]")
    assert error.value == "umbrella"
    empty = config_errors(rsa_issuer(tenants=[]))
    error_for(empty, "jwt.issuers.corp.tenants")


@pytest.mark.anyio
async def test_closing_the_verifier_cancels_a_hung_background_refresh(
        jwks_server: JwksServer) -> None:
    jwks_server.serve(public_jwk(RSA_KEY, "k1"))
    verifier = url_verifier(jwks_server.url)
    await accepted(verifier, sign(RSA_KEY, kid="k1"))
    jwks_server.hang = True
    later = NOW + 601  # stale: a background refresh starts and hangs
    await accepted(verifier, sign(RSA_KEY, kid="k1", sub="v", exp=later + 300), now=later)
    assert verifier._refreshes
    with anyio.fail_after(2):
        await verifier.aclose()
    assert not verifier._refreshes
