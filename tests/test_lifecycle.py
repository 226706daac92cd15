"""gatekeeper takes part in the ASGI lifespan: it starts before the app (the store opened,
what it holds logged) and stops after it; a start that fails stops the server; an app
without lifespan support still works (gatekeeper starts on the first request)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from gatekeeper import (
    AuditLog,
    ConfigError,
    Gatekeeper,
    MemoryStore,
    SQLiteStore,
    compile_policy,
    key_admin,
)
from gatekeeper.types import Receive, Scope, Send
from tests.conftest import PEPPER, Recorder
from tests.serving import serving

POLICY: dict[str, Any] = {"routes": {"protect": ["/v1/*"]}, "tenants": {"acme": {}}}
ROOT = Path(__file__).resolve().parent.parent


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.closed = 0

    async def close(self) -> None:
        self.closed += 1


def test_lifespan_starts_gatekeeper_before_the_app_and_stops_it_after(
        caplog: pytest.LogCaptureFixture) -> None:
    events: list[str] = []
    store = CountingStore()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append(f"app start, gatekeeper started={gk._started}")
        yield
        events.append(f"app stop, store closed={store.closed}")

    gk = Gatekeeper(Starlette(lifespan=lifespan), POLICY, store=store, pepper=PEPPER)
    with caplog.at_level(logging.INFO, logger="gatekeeper"), serving(gk, lifespan="on"):
        events.append("serving")
    assert events == ["app start, gatekeeper started=True", "serving",
                      "app stop, store closed=0"]
    assert store.closed == 1
    assert any("key store memory:// holds 0 keys" in r.getMessage() for r in caplog.records)


def test_an_app_without_lifespan_support_starts_gatekeeper_on_the_first_request(
        caplog: pytest.LogCaptureFixture) -> None:
    async def no_lifespan(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            raise RuntimeError("lifespan not supported")
        await Recorder()(scope, receive, send)

    gk = Gatekeeper(no_lifespan, POLICY, store=MemoryStore(), pepper=PEPPER)
    with caplog.at_level(logging.INFO, logger="gatekeeper"), serving(gk, lifespan="auto") as base:
        assert not gk._started
        assert httpx.get(f"{base}/other").status_code == 200
        assert httpx.get(f"{base}/v1/models").status_code == 401
    assert gk._started
    assert sum("holds 0 keys" in r.getMessage() for r in caplog.records) == 1


def test_a_store_that_cannot_open_fails_the_lifespan_startup(tmp_path: Path) -> None:
    broken = tmp_path / "keys.db"
    broken.write_bytes(b"this is not a database" * 100)
    gk = Gatekeeper(Starlette(), POLICY, store=SQLiteStore(broken), pepper=PEPPER)
    with pytest.raises(AssertionError, match="uvicorn stopped while starting"), \
            serving(gk, lifespan="on"):
        pass


def test_a_store_that_cannot_open_without_lifespan_fails_closed(tmp_path: Path) -> None:
    broken = tmp_path / "keys.db"
    broken.write_bytes(b"this is not a database" * 100)
    recorder = Recorder()
    gk = Gatekeeper(recorder, POLICY, store=SQLiteStore(broken), pepper=PEPPER)
    with serving(gk) as base:
        key, _ = asyncio.run(key_admin.create_key(MemoryStore(), PEPPER,
                                                  compile_policy(POLICY), "acme", time.time()))
        response = httpx.get(f"{base}/v1/models", headers={"authorization": f"Bearer {key}"})
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "store_unavailable"
    assert recorder.paths == []


def test_fastapi_add_middleware_with_a_bad_policy_stops_uvicorn_at_startup(
        tmp_path: Path) -> None:
    """A policy error under ``app.add_middleware`` used to show only at the first request,
    as a plain-text 500 on every path. With ``--lifespan on`` uvicorn exits at startup, and
    gatekeeper's own log line names the field in any lifespan mode."""
    (tmp_path / "policy.yaml").write_text(
        "tenants:\n  acme:\n    allowed_networks: ['10.0.0/8']\n")
    (tmp_path / "app.py").write_text(textwrap.dedent("""
        from fastapi import FastAPI
        from gatekeeper import Gatekeeper

        app = FastAPI()
        app.add_middleware(Gatekeeper, policy="policy.yaml")
    """))
    env = {k: v for k, v in os.environ.items() if k != "GATEKEEPER_PEPPER"}
    env["GATEKEEPER_PEPPER"] = "p" * 40
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-m", "uvicorn", "app:app", "--port", "0", "--lifespan", "on"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode != 0
    assert "gatekeeper cannot start" in done.stderr
    assert "tenants.acme.allowed_networks[0]" in done.stderr
    assert "Application startup failed" in done.stderr


def test_a_server_never_creates_an_empty_key_store(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A relative or mistyped store path used to be created empty: every key then answered
    key_unknown with nothing in the logs. Now the start fails and names the absolute path."""
    missing = tmp_path / "nowhere" / "keys.db"
    gk = Gatekeeper(Starlette(), {**POLICY, "store": f"sqlite:///{missing}"}, pepper=PEPPER)
    with caplog.at_level(logging.ERROR), pytest.raises(AssertionError, match="stopped"), \
            serving(gk, lifespan="on"):
        pass
    assert not missing.exists()
    assert any(str(missing) in r.getMessage() and "gatekeeper keys create" in r.getMessage()
               for r in caplog.records)


def test_startup_warns_when_audit_lines_would_go_nowhere(
        caplog: pytest.LogCaptureFixture) -> None:
    """Under plain uvicorn nothing handles INFO lines of gatekeeper.audit: refusals vanished."""
    silent = logging.getLogger("test.lifecycle.silent-audit")
    silent.propagate = False
    heard = logging.getLogger("test.lifecycle.heard-audit")
    for logger, warned in ((silent, True), (heard, False)):
        gk = Gatekeeper(Recorder(), POLICY, store=MemoryStore(), pepper=PEPPER,
                        audit=AuditLog(logger))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="gatekeeper"):
            asyncio.run(gk.startup())
        said = any("has no handler" in r.getMessage() for r in caplog.records)
        assert said is warned, logger.name


def test_an_empty_pepper_is_refused_by_the_python_api() -> None:
    with pytest.raises(ConfigError, match="pepper") as info:
        Gatekeeper(Recorder(), POLICY, store=MemoryStore(), pepper=b"")
    assert "(secret)" in str(info.value)
