"""GitHub secret-scanning alerts, end to end over real sockets: a signed alert revokes the key
and a running gatekeeper sharing the store refuses it within ``keys.cache_ttl``; a badly signed
one changes nothing; unknown tokens are false positives; bad bodies are 400 or 413.

The tests sign alerts with their own P-256 key pair, published in GitHub's key document format.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from gatekeeper import (
    ConfigError,
    Gatekeeper,
    KeyStatus,
    SecretScanning,
    SigningKeys,
    SQLiteStore,
    build_key,
    compile_policy,
    key_admin,
)
from gatekeeper.github_keys import parse_key_document, signature_valid
from gatekeeper.leaks import parse_alert
from gatekeeper.policy.model import Policy
from tests.conftest import PEPPER, Recorder
from tests.serving import serving

KID = "f9525bf080f75b3506ca1ead061add62b8633a346606dc5fe544e29231c6ee0d"
CACHE_TTL = 1.0
TYPE = "acme_gatekeeper_key"
LEAK_URL = "https://github.com/octocat/Hello-World/blob/1234567/.env"


def _pem(private: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def key_document(*keys: tuple[str, ec.EllipticCurvePrivateKey]) -> dict[str, Any]:
    return {"public_keys": [{"key_identifier": kid, "key": _pem(private), "is_current": True}
                            for kid, private in keys]}


def sign(private: ec.EllipticCurvePrivateKey, body: bytes) -> str:
    return base64.b64encode(private.sign(body, ec.ECDSA(hashes.SHA256()))).decode()


def alert(*tokens: str) -> bytes:
    return json.dumps([{"token": t, "type": TYPE, "url": LEAK_URL, "source": "content"}
                       for t in tokens]).encode()


GITHUB = ec.generate_private_key(ec.SECP256R1())
"""The tests' stand-in for GitHub's signing key."""


def signed(body: bytes, private: ec.EllipticCurvePrivateKey = GITHUB,
           kid: str = KID) -> dict[str, str]:
    return {"content-type": "application/json", "github-public-key-identifier": kid,
            "github-public-key-signature": sign(private, body)}


@dataclass
class Deployment:
    """A SQLite key store with two keys of tenant acme, and a policy naming it."""

    tmp: Path
    policy: Policy
    keys: list[str]
    ids: list[str]

    @property
    def store_url(self) -> str:
        return f"sqlite:///{self.tmp / 'keys.db'}"

    def gatekeeper(self, app: Any = None) -> Gatekeeper:
        return Gatekeeper(app or Recorder(), self.policy, store=self.store_url, pepper=PEPPER)

    def scanning(self, **options: Any) -> SecretScanning:
        return SecretScanning.from_policy(
            self.policy, SigningKeys(document=key_document((KID, GITHUB))), pepper=PEPPER,
            **options)

    async def status(self, key_id: str) -> KeyStatus:
        store = SQLiteStore(self.tmp / "keys.db")
        try:
            return (await key_admin.get_key(store, key_id)).status
        finally:
            await store.close()


POLICY: dict[str, Any] = {
    "routes": {"protect": ["/v1/*"]},
    "keys": {"cache_ttl": CACHE_TTL, "prefix": "acme_", "accepted_prefixes": ["gk_"]},
    "tenants": {"acme": {}},
}


@pytest.fixture
async def deployment(tmp_path: Path) -> Deployment:
    policy = compile_policy(POLICY | {"store": f"sqlite:///{tmp_path / 'keys.db'}"})
    store = SQLiteStore(tmp_path / "keys.db")
    keys, ids = [], []
    for prefix in ("acme_", "gk_"):  # the current prefix, and one issued before the switch
        key, record = await key_admin.create_key(
            store, PEPPER, compile_policy(POLICY | {"keys": {"prefix": prefix}}), "acme", 1.0)
        keys.append(key)
        ids.append(record.key_id)
    await store.close()
    return Deployment(tmp_path, policy, keys, ids)


def api_status(client: httpx.Client, key: str) -> int:
    return client.get("/v1/models", headers={"authorization": f"Bearer {key}"}).status_code


@pytest.mark.anyio
async def test_a_signed_alert_revokes_the_key_and_the_server_refuses_it_within_cache_ttl(
        deployment: Deployment, caplog: pytest.LogCaptureFixture) -> None:
    leaked, kept = deployment.keys
    with serving(deployment.gatekeeper()) as api_url, \
            serving(deployment.scanning(), lifespan="on") as scan_url, \
            httpx.Client(base_url=api_url) as api, \
            caplog.at_level(logging.INFO, logger="gatekeeper.audit"):
        assert api_status(api, leaked) == 200  # verified and cached for cache_ttl
        body = alert(leaked)
        answer = httpx.post(scan_url, content=body, headers=signed(body))
        revoked_at = time.monotonic()
        assert answer.status_code == 200, answer.text
        assert answer.json() == [{"token_raw": leaked, "token_type": TYPE,
                                  "label": "true_positive"}]
        assert await deployment.status(deployment.ids[0]) is KeyStatus.REVOKED
        time.sleep(max(0.0, revoked_at + CACHE_TTL + 0.05 - time.monotonic()))
        refused = api.get("/v1/models", headers={"authorization": f"Bearer {leaked}"})
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "key_revoked"
        assert api_status(api, kept) == 200  # the other key of the tenant is untouched
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gatekeeper.audit"
             and '"leaked"' in r.getMessage()]
    assert lines and lines[0]["event"] == "leaked"
    assert lines[0]["key_id"] == deployment.ids[0] and lines[0]["tenant"] == "acme"
    assert lines[0]["url"] == LEAK_URL and lines[0]["revoked"] is True
    secret = leaked[len("acme_") + 12:-6]
    assert not any(secret in r.getMessage() for r in caplog.records)


@pytest.mark.anyio
async def test_a_key_under_an_earlier_accepted_prefix_is_revoked_too(
        deployment: Deployment) -> None:
    old = deployment.keys[1]
    assert old.startswith("gk_")
    with serving(deployment.scanning(token_hash=True), lifespan="on") as url:
        body = alert(old, old)  # reported twice in one alert: revoked once
        answer = httpx.post(url, content=body, headers=signed(body))
    assert answer.status_code == 200, answer.text
    labels = [item["label"] for item in answer.json()]
    assert labels == ["true_positive", "true_positive"]
    assert all("token_raw" not in item and len(item["token_hash"]) == 64
               for item in answer.json())
    assert await deployment.status(deployment.ids[1]) is KeyStatus.REVOKED
    assert await deployment.status(deployment.ids[0]) is KeyStatus.ACTIVE


@pytest.mark.anyio
async def test_a_badly_signed_alert_gets_401_and_changes_nothing(
        deployment: Deployment) -> None:
    leaked = deployment.keys[0]
    body = alert(leaked)
    impostor = ec.generate_private_key(ec.SECP256R1())
    other_body = alert(deployment.keys[1])
    bad: list[dict[str, str]] = [
        signed(body, impostor),                                  # another key's signature
        signed(other_body),                                      # a signature over another body
        signed(body, kid="0" * 64),                              # a key GitHub never published
        {k: v for k, v in signed(body).items() if "signature" not in k},  # no signature
        {k: v for k, v in signed(body).items() if "identifier" not in k},  # no key named
        signed(body) | {"github-public-key-signature": "not base64!"},
        signed(body) | {"github-public-key-signature": base64.b64encode(b"\x30\x00").decode()},
    ]
    with serving(deployment.gatekeeper()) as api_url, \
            serving(deployment.scanning(), lifespan="on") as scan_url, \
            httpx.Client(base_url=api_url) as api:
        for headers in bad:
            answer = httpx.post(scan_url, content=body, headers=headers)
            assert answer.status_code == 401, (headers, answer.text)
            assert leaked not in answer.text
        # a repeated signature header (one of which may be forged) is no signature either
        repeated = httpx.post(scan_url, content=body, headers=[
            *signed(body).items(), ("github-public-key-signature", sign(impostor, body))])
        assert repeated.status_code == 401
        assert await deployment.status(deployment.ids[0]) is KeyStatus.ACTIVE
        time.sleep(CACHE_TTL + 0.05)  # past any cache: the store itself still says active
        assert api_status(api, leaked) == 200


@pytest.mark.anyio
async def test_tokens_that_are_not_our_keys_are_false_positives(deployment: Deployment) -> None:
    real = deployment.keys[0]
    key_id = deployment.ids[0]
    wrong_secret = build_key(key_id, "x" * 32, "acme_")      # right id, checksum fine
    unknown_id = build_key("ZZZZZZZZZZZZ", "y" * 32, "acme_")
    other_prefix = build_key(key_id, real[len("acme_") + 12:-6], "beta_")
    garbage = real[:-1] + ("A" if real[-1] != "A" else "B")  # checksum fails
    tokens = ["NMIfyYncKcRALEXAMPLE", wrong_secret, unknown_id, other_prefix, garbage]
    with serving(deployment.scanning(), lifespan="on") as url:
        body = alert(*tokens)
        answer = httpx.post(url, content=body, headers=signed(body))
    assert answer.status_code == 200, answer.text
    assert answer.json() == [{"token_raw": t, "token_type": TYPE, "label": "false_positive"}
                             for t in tokens]
    assert await deployment.status(key_id) is KeyStatus.ACTIVE


@pytest.mark.anyio
async def test_bad_bodies_are_400_and_oversized_ones_413(deployment: Deployment) -> None:
    bodies = [b"not json", b'{"token": "x"}', b"[]", b'[{"type": "t"}]', b'["x"]',
              b'[{"token": "x", "url": 5}]', b"\xff\xfe"]
    with serving(deployment.scanning(max_body=4096), lifespan="on") as url:
        for body in bodies:
            answer = httpx.post(url, content=body, headers=signed(body))
            assert answer.status_code == 400, (body, answer.text)
            assert "error" in answer.json()
        big = alert(*[deployment.keys[0]] * 60)
        assert len(big) > 4096
        answer = httpx.post(url, content=big, headers=signed(big))
        assert answer.status_code == 413

        def chunks() -> Iterator[bytes]:  # no content-length: cut off while reading
            for i in range(0, len(big), 512):
                yield big[i:i + 512]

        answer = httpx.post(url, content=chunks(), headers=signed(big))
        assert answer.status_code == 413
        assert httpx.get(url).status_code == 405
    assert await deployment.status(deployment.ids[0]) is KeyStatus.ACTIVE


@pytest.mark.anyio
async def test_mounted_beside_the_api_on_a_public_path(deployment: Deployment) -> None:
    """The README's layout: one server, the alert path outside ``routes.protect``; alerts
    never reach the API app behind gatekeeper."""
    api = Recorder()
    scanning = deployment.scanning()
    app = deployment.gatekeeper(Starlette(
        routes=[Route("/github/secret-scanning", scanning), Mount("/", api)],
        lifespan=scanning.lifespan))
    leaked = deployment.keys[0]
    with serving(app, lifespan="on") as url, httpx.Client(base_url=url) as client:
        assert api_status(client, leaked) == 200
        body = alert(leaked)
        answer = client.post("/github/secret-scanning", content=body, headers=signed(body))
        assert answer.status_code == 200, answer.text
        assert answer.json()[0]["label"] == "true_positive"
        time.sleep(CACHE_TTL + 0.05)
        assert api_status(client, leaked) == 401
    assert api.paths == ["/v1/models"]  # the first request only: alerts stayed out


@pytest.mark.anyio
async def test_for_gatekeeper_drops_the_key_from_its_caches_at_once(
        deployment: Deployment) -> None:
    policy = compile_policy(POLICY | {"keys": POLICY["keys"] | {"cache_ttl": 60}})
    gate = Gatekeeper(Recorder(), policy, store=deployment.store_url, pepper=PEPPER)
    scanning = SecretScanning.for_gatekeeper(
        gate, SigningKeys(document=json.dumps(key_document((KID, GITHUB)))))
    app = Starlette(routes=[Route("/github/secret-scanning", scanning), Mount("/", gate)])
    leaked = deployment.keys[0]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gk.test") as client:
        headers = {"x-api-key": leaked}
        assert (await client.get("/v1/models", headers=headers)).status_code == 200
        body = alert(leaked)
        answer = await client.post("/github/secret-scanning", content=body,
                                   headers=signed(body))
        assert answer.json()[0]["label"] == "true_positive"
        refused = await client.get("/v1/models", headers=headers)  # no wait for the 60 s TTL
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "key_revoked"
    await gate.shutdown()


@pytest.mark.anyio
async def test_keys_from_a_url_are_fetched_at_startup_and_again_for_an_unknown_key(
        deployment: Deployment) -> None:
    """GitHub rotates its signing keys: an alert naming a key not yet known is refused (401)
    and makes the next fetch happen now, not at the hourly refresh."""
    rotated = ec.generate_private_key(ec.SECP256R1())
    published = {"document": key_document((KID, GITHUB))}
    agents: list[str] = []

    async def keys(request: Request) -> Response:
        agents.append(request.headers.get("user-agent", ""))
        return JSONResponse(published["document"])

    with serving(Starlette(routes=[Route("/keys", keys)])) as keys_url:
        scanning = SecretScanning.from_policy(
            deployment.policy, SigningKeys(url=f"{keys_url}/keys"), pepper=PEPPER)
        with serving(scanning, lifespan="on") as url:
            assert len(agents) == 1 and agents[0]  # fetched at startup, with a user agent
            unknown = alert("nothing")
            assert httpx.post(url, content=unknown, headers=signed(unknown)).status_code == 200
            published["document"] = key_document((KID, GITHUB), ("new-key", rotated))
            body = alert(deployment.keys[0])
            headers = signed(body, rotated, "new-key")
            assert httpx.post(url, content=body, headers=headers).status_code == 401
            deadline = time.monotonic() + 10
            while "new-key" not in scanning.signing_keys.keys:
                assert time.monotonic() < deadline, "the new key was not fetched"
                time.sleep(0.02)
            answer = httpx.post(url, content=body, headers=headers)
            assert answer.status_code == 200 and answer.json()[0]["label"] == "true_positive"
    assert len(agents) == 2


@pytest.mark.anyio
async def test_without_signing_keys_alerts_wait_with_503(deployment: Deployment) -> None:
    """A key URL that does not answer: alerts get 503 (GitHub retries), nothing changes."""
    with serving(Starlette(routes=[Route("/keys", lambda r: Response(status_code=500))])) \
            as keys_url:
        scanning = SecretScanning.from_policy(
            deployment.policy, SigningKeys(url=f"{keys_url}/keys"), pepper=PEPPER)
        with serving(scanning, lifespan="on") as url:
            body = alert(deployment.keys[0])
            answer = httpx.post(url, content=body, headers=signed(body))
            assert answer.status_code == 503 and answer.headers["retry-after"] == "60"
    assert await deployment.status(deployment.ids[0]) is KeyStatus.ACTIVE


# --- pure parts -----------------------------------------------------------------------------

def test_key_document_keeps_p256_keys_and_refuses_a_document_without_one() -> None:
    other = ec.generate_private_key(ec.SECP384R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    document = key_document((KID, GITHUB), ("p384", other))
    document["public_keys"].append({"key_identifier": "rsa", "key": _pem(rsa_key)})
    document["public_keys"].append({"key_identifier": "broken", "key": "-----BEGIN nothing"})
    assert list(parse_key_document(json.dumps(document))) == [KID]
    for bad in ("not json", "{}", '{"public_keys": {}}', json.dumps(key_document(("x", other)))):
        with pytest.raises(ConfigError) as caught:
            parse_key_document(bad)
        assert caught.value.field == "public_keys"


def test_signature_check_over_the_raw_body() -> None:
    keys = parse_key_document(json.dumps(key_document((KID, GITHUB))))
    body = alert("token")
    signature = sign(GITHUB, body)
    assert signature_valid(keys, KID, signature, body)
    assert not signature_valid(keys, KID, signature, body + b" ")  # reformatted: not the same
    assert not signature_valid(keys, "other", signature, body)
    assert not signature_valid(keys, KID, "A" * 1000, body)


def test_signing_keys_settings_are_checked() -> None:
    document = key_document((KID, GITHUB))
    with pytest.raises(ConfigError, match="exactly one"):
        SigningKeys()
    with pytest.raises(ConfigError, match="exactly one"):
        SigningKeys(url="https://x.test/k", document=document)
    with pytest.raises(ConfigError) as caught:
        SigningKeys(url="http://github.example/keys")
    assert caught.value.field == "signing_keys.url"
    with pytest.raises(ConfigError) as caught:
        SigningKeys(file="/nonexistent/keys.json")
    assert caught.value.field == "signing_keys.file"


def test_alert_matches_may_have_an_empty_url_and_no_source() -> None:
    matches = parse_alert(b'[{"token": "t", "type": "x", "url": ""}]')
    assert not isinstance(matches, str)
    assert matches[0].token == "t" and matches[0].url == "" and matches[0].source == ""


@pytest.mark.anyio
async def test_with_the_redis_store_every_server_refuses_the_key_at_once() -> None:
    """A revoke is published on Redis: a server whose cache would trust the key for a minute
    drops it as soon as the notice arrives."""
    from gatekeeper.store.redis import RedisStore
    from tests.redis_server import redis_server
    from tests.store.conftest import SLACK, empty_redis_store

    with redis_server() as port:
        store = await empty_redis_store(port)
        policy = compile_policy(POLICY | {"keys": POLICY["keys"] | {"cache_ttl": 60}})
        key, record = await key_admin.create_key(store, PEPPER, policy, "acme", time.time())
        url = f"redis://127.0.0.1:{port}/0"
        # each server closes its own store at lifespan shutdown, on its own event loop
        api = Starlette(routes=[Route("/v1/models", lambda request: Response("ok"))])
        gate = Gatekeeper(api, policy, store=RedisStore(url, **SLACK), pepper=PEPPER)
        scanning = SecretScanning(RedisStore(url, **SLACK), PEPPER,
                                  SigningKeys(document=key_document((KID, GITHUB))),
                                  prefixes=policy.keys.prefixes, owns_store=True)
        try:
            with serving(gate, lifespan="on") as api_url, \
                    serving(scanning, lifespan="on") as scan_url, \
                    httpx.Client(base_url=api_url) as client:
                assert api_status(client, key) == 200
                body = alert(key)
                answer = httpx.post(scan_url, content=body, headers=signed(body))
                assert answer.json()[0]["label"] == "true_positive"
                deadline = time.monotonic() + 10  # far inside the 60 s cache_ttl
                while api_status(client, key) != 401:
                    assert time.monotonic() < deadline, "the revoke notice never arrived"
                    time.sleep(0.02)
            assert (await key_admin.get_key(store, record.key_id)).status is KeyStatus.REVOKED
        finally:
            await store.close()


def test_a_store_that_cannot_open_answers_503_without_a_traceback(tmp_path: Path) -> None:
    """Mounted without a lifespan, the app starts on the first alert; a broken store is a 503
    GitHub retries (and a log line), never a 500."""
    broken = tmp_path / "keys.db"
    broken.write_bytes(b"this is not a database" * 100)
    scanning = SecretScanning(SQLiteStore(broken), PEPPER,
                              SigningKeys(document=key_document((KID, GITHUB))),
                              owns_store=True)
    with serving(scanning) as url:
        body = alert(build_key("AbCdEfGh1234", "s" * 32))
        for _ in range(2):  # tried again, and refused again, on the next alert
            answer = httpx.post(url, content=body, headers=signed(body))
            assert answer.status_code == 503, answer.text
            assert answer.headers["retry-after"] == "60"
