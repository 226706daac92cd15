"""Replay decides exactly as the live middleware did: the same requests, at the same times,
through uvicorn on a real socket and through ``replay`` on a ManualClock, give the same
decisions request for request (keys, JWTs, allowed, refused, cached, expired)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from gatekeeper import (
    Decision,
    Gatekeeper,
    ManualClock,
    SQLiteStore,
    build_key,
    compile_policy,
    key_admin,
)
from gatekeeper.demo.upstream import create_upstream
from gatekeeper.errors import ConfigError
from gatekeeper.replay import RequestRecord, read_records, replay
from gatekeeper.types import Scope
from tests.conftest import PEPPER
from tests.serving import serving

SECRET = "replay-test-hs256-secret-0123456789-abcdefghij"
ISSUER = "https://sso.replay.test/"
POLICY: dict[str, Any] = {
    "routes": {"protect": ["/v1/*"], "public": ["/healthz"]},
    "request_tenant": {"header": "x-tenant-id"},
    "tenants": {"acme": {"allowed_networks": ["127.0.0.0/8", "::1/128"]},
                "globex": {"allowed_networks": ["198.51.100.0/24"]}},
    "jwt": {"issuers": {"corp": {"issuer": ISSUER, "audiences": ["gatekeeper"],
                                 "algorithms": ["HS256"], "secret_env": "REPLAY_JWT_SECRET"}}},
}


def _token(**claims: Any) -> str:
    base = {"iss": ISSUER, "aud": "gatekeeper", "sub": "alice", "tenant": "acme",
            "exp": int(time.time()) + 600}
    return jwt.encode(base | claims, SECRET, algorithm="HS256")


async def _issue(store: SQLiteStore) -> dict[str, str]:
    policy = compile_policy(POLICY)
    now = time.time()
    keys = {}
    plan: list[tuple[str, str, dict[str, Any]]] = [
        ("good", "acme", {}), ("office", "acme", {"networks": ["203.0.113.0/24"]}),
        ("globex", "globex", {}), ("revoked", "acme", {}), ("suspended", "acme", {}),
        ("expiring", "acme", {"expires_at": now + 1.5}),
    ]
    for name, tenant, extra in plan:
        keys[name], record = await key_admin.create_key(store, PEPPER, policy, tenant, now,
                                                        **extra)
        if name in ("revoked", "suspended"):
            from gatekeeper import KeyStatus

            status = KeyStatus.REVOKED if name == "revoked" else KeyStatus.SUSPENDED
            await key_admin.set_status(store, record.key_id, status, now)
    return keys


def _requests(keys: dict[str, str]) -> list[tuple[str, str, dict[str, str]]]:
    def bearer(value: str, **more: str) -> dict[str, str]:
        return {"authorization": f"Bearer {value}", **more}

    good = keys["good"]
    return [
        ("GET", "/v1/models", bearer(good)),
        ("GET", "/v1/models", bearer(good)),  # a reused decision record
        ("POST", "/v1/chat/completions", {"api-key": good}),
        ("GET", "/healthz", {}),  # public: no decision on either side
        ("GET", "/v1/models", {}),
        ("GET", "/v1/models", bearer("sk-not-one-of-ours")),
        ("GET", "/v1/models", bearer(good[:-1] + ("A" if good[-1] != "A" else "B"))),
        ("GET", "/v1/models", bearer(build_key("ZZZZZZZZZZZZ", "f" * 32))),
        ("GET", "/v1/models", bearer(keys["revoked"])),
        ("GET", "/v1/models", bearer(keys["suspended"])),
        ("GET", "/v1/models", bearer(keys["office"])),
        ("GET", "/v1/models", bearer(keys["globex"])),
        ("GET", "/v1/models", bearer(good, **{"x-tenant-id": "globex"})),
        ("GET", "/v1/models", {**bearer(good), "x-api-key": keys["globex"]}),
        ("GET", "/v1/models", bearer(_token())),
        ("GET", "/v1/models", bearer(_token())),
        ("GET", "/v1/models", bearer(_token(aud="elsewhere"))),
        ("GET", "/v1/models", bearer(_token(tenant="globex", sub="bob"))),
        ("GET", "/v1/models", bearer(_token(exp=int(time.time()) - 3600))),
        ("GET", "/v1/models", bearer(keys["expiring"])),
        ("SLEEP", "", {}),
        ("GET", "/v1/models", bearer(keys["expiring"])),
        ("GET", "/v1/models", bearer(good)),
    ]


def _shape(decision: Decision) -> tuple[Any, ...]:
    return (decision.reason.code, decision.action, decision.key_id, decision.tenant,
            decision.headers, decision.detail)


def test_replay_decides_as_the_live_middleware_did(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLAY_JWT_SECRET", SECRET)
    path = tmp_path / "keys.db"
    store = SQLiteStore(path)
    keys = asyncio.run(_issue(store))
    asyncio.run(store.close())

    live: list[tuple[float, Decision]] = []

    def observe(scope: Scope, decision: Decision, now: float) -> None:
        live.append((now, decision))

    gk = Gatekeeper(create_upstream(), POLICY, store=SQLiteStore(path), pepper=PEPPER,
                    observer=observe)
    sent: list[tuple[str, str, dict[str, str]]] = []
    with serving(gk) as base, httpx.Client(base_url=base) as client:
        for method, target, headers in _requests(keys):
            if method == "SLEEP":
                time.sleep(1.6)  # the expiring key's expiry passes
                continue
            client.request(method, target, headers=headers,
                           json={"model": "demo-echo", "messages": [{"role": "user",
                                                                     "content": "hi"}]}
                           if method == "POST" else None)
            if target != "/healthz":
                sent.append((method, target, headers))
    assert len(live) == len(sent)
    codes = [d.reason.code for _, d in live]
    assert codes.count("ok") == 7 and "key_expired" in codes and "token_expired" in codes

    records = [RequestRecord.from_dict({"ts": ts, "client_ip": "127.0.0.1", "method": m,
                                        "path": p, "headers": h})
               for (ts, _), (m, p, h) in zip(live, sent, strict=True)]
    replayed = asyncio.run(replay(records, compile_policy(POLICY), SQLiteStore(path), PEPPER,
                                  ManualClock()))
    assert [_shape(d) for d in replayed] == [_shape(d) for _, d in live]


def test_records_come_from_json_lines_and_bad_ones_name_their_line() -> None:
    lines = ['{"ts": 1800000000, "client_ip": "192.0.2.1", "method": "GET", "path": "/v1/x",'
             ' "headers": {"Authorization": "Bearer k", "x-multi": ["a", "b"]}}', "",
             json.dumps({"ts": "yesterday", "method": "GET", "path": "/"})]
    records = read_records(lines)
    first = next(records)
    assert first.headers == ((b"authorization", b"Bearer k"), (b"x-multi", b"a"),
                             (b"x-multi", b"b"))
    with pytest.raises(ConfigError, match=r"line 3\.ts"):
        next(records)
    with pytest.raises(ConfigError, match=r"line 1"):
        next(read_records(["not json"]))
