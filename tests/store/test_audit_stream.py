"""The Redis audit stream against a real redis-server: refusals and key changes land in it in
batches off the request path, bounded by MAXLEN ~, never a key; a failing Redis costs the
requests nothing and is counted; the policy section is validated and not reloadable."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from redis.asyncio import Redis

from gatekeeper import Gatekeeper, MemoryStore, compile_policy, key_admin, reasons
from gatekeeper.audit import AuditLog
from gatekeeper.audit_stream import RedisAuditStream
from gatekeeper.cli.main import main
from gatekeeper.decision import FLAG, Decision
from gatekeeper.errors import ConfigError, PolicyError
from gatekeeper.metrics import Metrics
from gatekeeper.policy.load import load_policy
from gatekeeper.principal import KeyStatus
from tests.conftest import PEPPER, Recorder, bearer
from tests.redis_server import free_port

pytestmark = pytest.mark.anyio
CLIENT = ("192.0.2.10", 40000)


def policy(port: int, key: str, maxlen: int = 1000, password: str = "") -> dict[str, Any]:
    auth = f":{password}@" if password else ""
    return {"routes": {"protect": ["/v1/*"]}, "tenants": {"acme": {}},
            "audit": {"redis_stream": {"url": f"redis://{auth}127.0.0.1:{port}/0",
                                       "key": key, "maxlen": maxlen}}}


async def gate(data: dict[str, Any]) -> tuple[Gatekeeper, dict[str, str]]:
    compiled = compile_policy(data)
    store = MemoryStore()
    gk = Gatekeeper(Recorder(), compiled, store=store, pepper=PEPPER)
    now = time.time()
    keys = {}
    for name in ("good", "revoked"):
        keys[name], record = await key_admin.create_key(store, PEPPER, compiled, "acme", now)
    await key_admin.set_status(store, record.key_id, KeyStatus.REVOKED, now)
    return gk, keys


def client(gk: Gatekeeper) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=gk, client=CLIENT),
                             base_url="http://gatekeeper.test")


async def entries(port: int, key: str) -> list[dict[str, str]]:
    redis = Redis(port=port, decode_responses=True)
    try:
        found: list[tuple[str, dict[str, str]]] = await redis.xrange(key)  # type: ignore[assignment]
        return [fields for _, fields in found]
    finally:
        await redis.aclose()


async def test_refusals_land_in_the_stream_in_batches_never_a_key(redis_port: int) -> None:
    key = f"gk:audit:test:{time.monotonic_ns()}"
    gk, keys = await gate(policy(redis_port, key))
    async with client(gk) as http:
        for _ in range(3):
            assert (await http.get("/v1/models", headers=bearer(keys["revoked"]))
                    ).status_code == 401
        assert (await http.get("/v1/models")).status_code == 401
        assert (await http.get("/v1/models", headers=bearer(keys["good"]))).status_code == 200
    await gk.shutdown()  # writes what is buffered
    found = await entries(redis_port, key)
    assert [e["event"] for e in found] == ["refused"] * 4
    lines = [json.loads(e["line"]) for e in found]
    assert [line["reason"] for line in lines] == ["key_revoked"] * 3 + ["credential_missing"]
    everything = json.dumps(found)
    assert keys["revoked"] not in everything and keys["good"] not in everything
    assert gk.metrics.registry.get_sample_value(
        "gatekeeper_audit_stream_entries_total", {"result": "written"}) == 4


async def test_the_stream_is_bounded_by_maxlen(redis_port: int) -> None:
    key = f"gk:audit:test:{time.monotonic_ns()}"
    stream = RedisAuditStream(f"redis://127.0.0.1:{redis_port}/0", key, 100, batch=50)
    stream.start()
    for i in range(1000):
        stream.add("refused", json.dumps({"n": i}))
    await stream.stop()
    found = await entries(redis_port, key)
    assert 100 <= len(found) < 300  # MAXLEN ~ trims whole nodes: about maxlen
    assert json.loads(found[-1]["line"]) == {"n": 999}


async def test_a_full_buffer_drops_and_counts(redis_port: int) -> None:
    metrics = Metrics()
    stream = RedisAuditStream(f"redis://127.0.0.1:{redis_port}/0", "gk:audit:unused", 100,
                              metrics=metrics, buffer=10)
    for i in range(15):
        stream.add("refused", str(i))
    assert metrics.registry.get_sample_value(
        "gatekeeper_audit_stream_entries_total", {"result": "dropped"}) == 5


async def test_an_unreachable_stream_costs_requests_nothing_and_is_counted(
        caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nothing listens there
    gk, keys = await gate(policy(port, "gk:audit", password="s3cret-pw"))
    with caplog.at_level(logging.WARNING, logger="gatekeeper"):
        async with client(gk) as http:
            for _ in range(20):
                assert (await http.get("/v1/models", headers=bearer(keys["revoked"]))
                        ).status_code == 401
        await gk.shutdown()
    assert gk.metrics.registry.get_sample_value(
        "gatekeeper_audit_stream_entries_total", {"result": "dropped"}) == 20
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "audit stream gk:audit" in said and "s3cret-pw" not in said


async def test_a_flag_and_a_key_change_are_written_too(redis_port: int) -> None:
    key = f"gk:audit:test:{time.monotonic_ns()}"
    audit = AuditLog(logging.getLogger("gatekeeper.audit.test"))
    audit.stream = RedisAuditStream(f"redis://127.0.0.1:{redis_port}/0", key, 1000)
    audit.start()
    audit.flagged(Decision(reasons.OK, None, "AbCdEfGhIjKl", "acme", "country unknown", FLAG,
                           signals=("country:unknown",)), None, time.time())
    audit.key_changed("key.suspended", "acme", "AbCdEfGhIjKl", time.time(), "by test")
    await audit.close_stream()
    found = await entries(redis_port, key)
    assert [e["event"] for e in found] == ["flagged", "key.suspended"]
    assert json.loads(found[1]["line"])["key_id"] == "AbCdEfGhIjKl"


def test_a_cli_suspend_writes_the_audit_stream(redis_port: int, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GATEKEEPER_PEPPER", PEPPER.decode())
    key = f"gk:audit:test:{time.monotonic_ns()}"
    path = tmp_path / "policy.yaml"
    data = policy(redis_port, key) | {"store": "sqlite:///keys.db"}
    path.write_text(yaml.safe_dump(data))
    assert main(["keys", "create", "--tenant", "acme", "--policy", str(path), "--json"]) == 0
    key_id = json.loads(capsys.readouterr().out)["record"]["key_id"]
    assert main(["keys", "suspend", key_id, "--policy", str(path)]) == 0
    found = asyncio.run(entries(redis_port, key))
    assert [(e["event"], json.loads(e["line"])["key_id"]) for e in found] == [
        ("key.suspended", key_id)]


def test_the_audit_section_is_validated_by_field(tmp_path: Path) -> None:
    bad = {"tenants": {}, "audit": {"redis_stream": {"url": "http://x", "maxlen": 5,
                                                     "key": "", "typo": 1}}}
    with pytest.raises(PolicyError) as caught:
        compile_policy(bad)
    text = str(caught.value)
    for field in ("audit.redis_stream.url", "audit.redis_stream.maxlen",
                  "audit.redis_stream.key", "audit.redis_stream.typo"):
        assert field in text, text
    # from a file, without a url the store must be a single Redis
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({"audit": {"redis_stream": {}}}))
    with pytest.raises(PolicyError, match=r"audit\.redis_stream\.url"):
        load_policy(path)


async def test_a_reload_cannot_change_the_stream(redis_port: int) -> None:
    gk, _ = await gate(policy(redis_port, "gk:audit:a"))
    with pytest.raises(ConfigError, match=r"audit\.redis_stream"):
        gk.reload(compile_policy(policy(redis_port, "gk:audit:b")))
    assert gk.policy.audit_stream is not None and gk.policy.audit_stream.key == "gk:audit:a"
