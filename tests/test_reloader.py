"""Policy hot reload from the file: on change (polled), on SIGHUP and on request; a policy that
does not load keeps the running one and says why, naming the field."""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path

import anyio
import httpx
import pytest

from gatekeeper import Gatekeeper, MemoryStore, key_admin
from gatekeeper.errors import ConfigError
from tests.conftest import PEPPER, Recorder, asgi_request
from tests.serving import UvicornProcess

pytestmark = pytest.mark.anyio

OPEN = "routes: {protect: ['/v1/*']}\ntenants:\n  acme: {}\n"
CLOSED = "routes: {protect: ['/v1/*']}\ntenants:\n  acme: {disabled: true}\n"
BROKEN = "routes: {protect: ['/v1/*']}\ntenants:\n  acme: {allowed_networks: ['10.0.0/8']}\n"


async def _served(tmp_path: Path, text: str, **kwargs: object) -> tuple[Gatekeeper, str, Path]:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    store = MemoryStore()
    gk = Gatekeeper(Recorder(), path, store=store, pepper=PEPPER, **kwargs)  # type: ignore[arg-type]
    key, _ = await key_admin.create_key(store, PEPPER, gk.policy, "acme", 1e9)
    await gk.startup()
    return gk, key, path


async def _status(gk: Gatekeeper, key: str) -> int:
    sent = await asgi_request(gk, "/v1/models", [(b"authorization", f"Bearer {key}".encode())])
    return int(sent[0]["status"])


async def test_a_changed_file_is_reloaded_and_a_broken_one_keeps_the_running_policy(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    gk, key, path = await _served(tmp_path, OPEN, watch_policy=0.02)
    try:
        assert await _status(gk, key) == 200
        path.write_text(CLOSED)
        with anyio.fail_after(5):
            while gk.policy.tenants["acme"].disabled is False:
                await anyio.sleep(0.01)
        assert await _status(gk, key) == 403
        running = gk.runtime
        with caplog.at_level(logging.ERROR, logger="gatekeeper"):
            path.write_text(BROKEN)
            with anyio.fail_after(5):
                while "refused" not in caplog.text:
                    await anyio.sleep(0.01)
        assert gk.runtime is running  # the broken file changed nothing
        assert "tenants.acme.allowed_networks[0]" in caplog.text
        assert await _status(gk, key) == 403
    finally:
        await gk.shutdown()


async def test_reload_policy_on_request_and_what_cannot_change(tmp_path: Path) -> None:
    gk, key, path = await _served(tmp_path, OPEN)
    try:
        path.write_text(CLOSED)
        assert await gk.reload_policy() is True
        assert await _status(gk, key) == 403
        path.write_text(OPEN + "store: memory://elsewhere\n")
        assert await gk.reload_policy() is False  # the store is fixed for the process
        assert await _status(gk, key) == 403
    finally:
        await gk.shutdown()
    with pytest.raises(ConfigError, match="watch_policy"):
        Gatekeeper(Recorder(), {"tenants": {"acme": {}}}, store=MemoryStore(), pepper=PEPPER,
                   watch_policy=1.0)


def test_sighup_reloads_a_server(tmp_path: Path) -> None:
    """A real uvicorn process: the policy file changes, nothing polls it, SIGHUP reloads it."""
    path = tmp_path / "policy.yaml"
    path.write_text(OPEN)
    source = (
        "import asyncio, time\n"
        "from starlette.applications import Starlette\n"
        "from starlette.responses import PlainTextResponse\n"
        "from starlette.routing import Route\n"
        "from gatekeeper import Gatekeeper, MemoryStore, key_admin\n"
        "store = MemoryStore()\n"
        f"app = Gatekeeper(Starlette(routes=[Route('/v1/models', lambda r: "
        f"PlainTextResponse('ok'))]), {str(path)!r}, store=store, pepper=b'p' * 40)\n"
        "key, _ = asyncio.run(key_admin.create_key(store, b'p' * 40, app.policy, 'acme', "
        "time.time()))\n"
        "open('key.txt', 'w').write(key)\n")
    with UvicornProcess(tmp_path, source, "--log-level", "info") as server:
        server.read_until(lambda out: "Application startup complete" in out)
        url = f"http://127.0.0.1:{server.port}/v1/models"
        headers = {"authorization": f"Bearer {(tmp_path / 'key.txt').read_text()}"}
        assert httpx.get(url, headers=headers).status_code == 200
        path.write_text(CLOSED)
        assert httpx.get(url, headers=headers).status_code == 200  # nothing polls the file
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while httpx.get(url, headers=headers).status_code != 403:
            assert time.monotonic() < deadline, "SIGHUP did not reload the policy"
            time.sleep(0.02)


async def test_reloads_show_in_the_metrics(tmp_path: Path) -> None:
    gk, _, path = await _served(tmp_path, OPEN)
    sample = gk.metrics.registry.get_sample_value
    try:
        fingerprint = next(s.labels["fingerprint"] for m in gk.metrics.registry.collect()
                           for s in m.samples if s.name == "gatekeeper_policy_info")
        path.write_text(CLOSED)
        assert await gk.reload_policy()
        assert sample("gatekeeper_policy_reloads_total") == 1
        assert sample("gatekeeper_policy_last_reload_successful") == 1
        after = next(s.labels["fingerprint"] for m in gk.metrics.registry.collect()
                     for s in m.samples if s.name == "gatekeeper_policy_info")
        assert after != fingerprint
        path.write_text(BROKEN)
        assert not await gk.reload_policy()
        assert sample("gatekeeper_policy_reload_errors_total") == 1
        assert sample("gatekeeper_policy_last_reload_successful") == 0
    finally:
        await gk.shutdown()


async def test_file_reloads_under_concurrent_load_never_fail_or_mis_decide(
        tmp_path: Path) -> None:
    """Eight clients send requests while the file flips between two policies (and sometimes
    holds a broken one): every answer is one of the two policies' answers, none fails, and the
    app saw exactly the allowed requests."""
    import collections
    import json
    import os

    recorder = Recorder()
    path = tmp_path / "policy.yaml"
    path.write_text(OPEN)
    store = MemoryStore()
    gk = Gatekeeper(recorder, path, store=store, pepper=PEPPER, watch_policy=0.005)
    key, _ = await key_admin.create_key(store, PEPPER, gk.policy, "acme", 1e9)
    answers: collections.Counter[int | str] = collections.Counter()
    writing = anyio.Event()
    await gk.startup()

    async def writer() -> None:
        for n in range(60):
            text = (OPEN, CLOSED, BROKEN)[n % 3]
            staged = tmp_path / f"policy.{n}.tmp"
            staged.write_text(text)
            os.replace(staged, path)  # as an editor or a ConfigMap update replaces it
            await anyio.sleep(0.01)
        writing.set()

    async def client() -> None:
        while not writing.is_set():
            sent = await asgi_request(gk, "/v1/models",
                                      [(b"authorization", f"Bearer {key}".encode())])
            status = int(sent[0]["status"])
            answers[status if status == 200 else
                    f"{status} {json.loads(sent[1]['body'])['error']['code']}"] += 1
            await anyio.sleep(0.001)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer)
            for _ in range(8):
                tg.start_soon(client)
    finally:
        await gk.shutdown()
    assert set(answers) == {200, "403 tenant_disabled"}, answers  # both policies, nothing else
    assert len(recorder.paths) == answers[200]
    sample = gk.metrics.registry.get_sample_value
    assert (sample("gatekeeper_policy_reloads_total") or 0) >= 2
    assert (sample("gatekeeper_policy_reload_errors_total") or 0) >= 1  # the broken file
