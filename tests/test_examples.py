"""The examples are code users copy: each must load, protect and pass as its docstring says."""

from __future__ import annotations

import importlib
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import httpx
import pytest

from gatekeeper import SQLiteStore, key_admin, load_policy
from tests.conftest import CHAT, PEPPER, bearer
from tests.serving import wait_until_up

pytestmark = pytest.mark.anyio
REPO = Path(__file__).resolve().parent.parent
EXAMPLE_POLICY = REPO / "examples" / "policy.yaml"


@pytest.fixture
def example_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The example policy copied out of the repository: its relative SQLite store then lands
    beside the copy, as it lands beside examples/policy.yaml for a user."""
    policy = tmp_path / "policy.yaml"
    shutil.copy(EXAMPLE_POLICY, policy)
    monkeypatch.setenv("GATEKEEPER_POLICY", str(policy))
    monkeypatch.setenv("GATEKEEPER_PEPPER", PEPPER.decode())
    for name in ("examples.starlette_app", "examples.fastapi_app"):
        sys.modules.pop(name, None)
    return policy


async def _issue(policy_path: Path, tenant: str = "acme") -> str:
    policy = load_policy(policy_path)
    store = SQLiteStore(policy_path.with_name("gatekeeper-keys.db"))
    try:
        key, _ = await key_admin.create_key(store, PEPPER, policy, tenant, 1.0)
    finally:
        await store.close()
    return key


def test_the_annotated_policy_is_valid() -> None:
    policy = load_policy(EXAMPLE_POLICY)
    assert set(policy.tenants) == {"acme", "globex", "initech"}
    assert policy.routes.is_protected("/v1/chat/completions")
    assert not policy.routes.is_protected("/metrics")


@pytest.mark.parametrize("module", ["examples.starlette_app", "examples.fastapi_app"])
async def test_example_app_protects_v1(example_env: Path, module: str) -> None:
    app = importlib.import_module(module).app
    key = await _issue(example_env)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://example") as client:
        allowed = await client.post("/v1/chat/completions", json=CHAT, headers=bearer(key))
        assert allowed.status_code == 200
        assert "acme" in allowed.json()["choices"][0]["message"]["content"]
        refused = await client.post("/v1/chat/completions", json=CHAT)
        assert refused.json()["error"]["code"] == "credential_missing"
        assert (await client.get("/healthz")).status_code == 200
    async with httpx.AsyncClient(transport=httpx.ASGITransport(
            app=app, client=("203.0.113.9", 1)), base_url="http://example") as client:
        outside = await client.post("/v1/chat/completions", json=CHAT, headers=bearer(key))
        assert outside.json()["error"]["code"] == "network_not_allowed"


@pytest.mark.parametrize("log_config", [True, False], ids=["with-config", "uvicorn-default"])
def test_the_logging_config_shows_audit_lines_under_uvicorn(example_env: Path,
                                                            log_config: bool) -> None:
    """A real uvicorn, as the README runs it: a refused request prints its audit line with
    examples/logging.yaml, and (why the file exists) nothing without it."""
    anyio.run(_issue, example_env)  # the store file exists, as after `gatekeeper keys create`
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    flags = ["--log-config", str(REPO / "examples" / "logging.yaml")] if log_config else []
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "examples.starlette_app:app", "--no-proxy-headers",
         "--host", "127.0.0.1", "--port", str(port), "--app-dir", str(REPO), *flags],
        cwd=example_env.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_up(base, server, "uvicorn did not start")
        refused = httpx.get(f"{base}/v1/models", headers={"x-api-key": "gk_nope"})
        assert refused.json()["error"]["code"] == "credential_malformed"
    finally:
        server.terminate()
        out, err = server.communicate(timeout=10)
    audit = [json.loads(line) for line in out.splitlines() if '"event":"refused"' in line]
    if not log_config:
        assert audit == [] and '"event":"refused"' not in err
        return
    assert len(audit) == 1, out
    assert audit[0]["reason"] == "credential_malformed"
    assert audit[0]["path"] == "/v1/models"
    assert audit[0]["client_ip"] == "127.0.0.1"
    assert "GET /v1/models" in out  # uvicorn's own access line still prints
