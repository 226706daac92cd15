"""Metrics with `uvicorn --workers 2`: under PROMETHEUS_MULTIPROC_DIR one scrape, whichever
worker answers it, counts every worker's decisions."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx

from gatekeeper import key_admin, store_from_url
from gatekeeper.policy.load import compile_policy
from tests.serving import UvicornProcess

PEPPER = b"p" * 40
POLICY = {"routes": {"protect": ["/v1/*"], "public": ["/metrics"]}, "tenants": {"acme": {}}}


def _allowed(exposition: str) -> float:
    found = re.search(r'^gatekeeper_decisions_total\{outcome="allow",reason="ok"\} (\S+)$',
                      exposition, re.M)
    assert found, exposition[:2000]
    return float(found.group(1))


def test_one_scrape_counts_every_workers_decisions(tmp_path: Path) -> None:
    database = tmp_path / "keys.db"

    async def issue() -> str:
        store = store_from_url(f"sqlite:///{database}")
        try:
            key, _ = await key_admin.create_key(store, PEPPER, compile_policy(POLICY), "acme",
                                                time.time())
            return key
        finally:
            await store.close()

    key = asyncio.run(issue())
    shared = tmp_path / "prometheus"
    shared.mkdir()
    source = (
        "import os\n"
        "from starlette.applications import Starlette\n"
        "from starlette.responses import PlainTextResponse\n"
        "from starlette.routing import Route\n"
        "from gatekeeper import Gatekeeper\n"
        "from gatekeeper.metrics import Metrics\n"
        "metrics = Metrics()\n"
        "inner = Starlette(routes=[Route('/v1/pid', lambda r: PlainTextResponse(str(os.getpid()))),"
        " Route('/metrics', metrics.asgi_app())])\n"
        f"app = Gatekeeper(inner, {POLICY!r}, store='sqlite:///{database}', "
        f"pepper={PEPPER!r}, metrics=metrics)\n")
    with UvicornProcess(tmp_path, source, "--workers", "2", "--log-level", "info",
                        env={"PROMETHEUS_MULTIPROC_DIR": str(shared)}) as server:
        server.read_until(lambda out: out.count("Application startup complete") >= 2)
        base = f"http://127.0.0.1:{server.port}"
        pids: set[str] = set()
        sent = 0
        while len(pids) < 2 or sent < 40:  # new connections until both workers answered
            assert sent < 2000, f"one worker answered every connection: {pids}"
            answer = httpx.get(f"{base}/v1/pid", headers={"authorization": f"Bearer {key}"})
            assert answer.status_code == 200
            pids.add(answer.text)
            sent += 1
        time.sleep(1.5)  # each worker flushes its counts every second
        exposition = httpx.get(f"{base}/metrics").text
        assert _allowed(exposition) == sent
        assert _allowed(httpx.get(f"{base}/metrics").text) == sent  # any worker, same answer
    assert 'gatekeeper_build_info{' in exposition  # this process's info metrics too
    promtool = shutil.which("promtool")
    if promtool is not None:  # tests/test_metrics.py insists on it under CI=true
        checked = subprocess.run([promtool, "check", "metrics"], input=exposition,
                                 capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stdout + checked.stderr
