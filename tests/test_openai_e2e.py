"""The official ``openai`` client against the demo served by uvicorn on a real loopback socket.

The server runs the demo wiring (SQLite key store, demo policy, fresh keys); the CLI runs in
its own process against the same store, as an operator would.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import uvicorn

from gatekeeper.demo.app import build_demo_app, write_demo_policy
from gatekeeper.demo.run import issue_demo_keys
from tests.serving import wait_until_up

MESSAGES: Any = [{"role": "user", "content": "hello there"}]


@dataclass
class Served:
    base: str
    keys: dict[str, str]
    upstream: Any
    policy_path: Path

    def client(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base}/v1", api_key=key, max_retries=0,
                             timeout=10.0)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    policy_path = write_demo_policy(tmp_path_factory.mktemp("demo"))
    keys = asyncio.run(issue_demo_keys(policy_path))
    app, upstream = build_demo_app(policy_path)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", proxy_headers=False,
                                          lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield Served(f"http://127.0.0.1:{port}", keys, upstream, policy_path)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _seen(served: Served) -> int:
    return len(served.upstream.state.seen)


def test_chat_completes_with_a_valid_key(served: Served) -> None:
    before = _seen(served)
    completion = served.client(served.keys["good"]).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES)
    assert completion.choices[0].message.content is not None
    assert completion.choices[0].message.content.startswith("Hello acme")
    assert completion.usage is not None and completion.usage.total_tokens > 0
    assert _seen(served) == before + 1


def test_streamed_chat_with_usage(served: Served) -> None:
    stream = served.client(served.keys["good"]).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "hello there" in text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_models_list(served: Served) -> None:
    models = served.client(served.keys["good"]).models.list()
    assert "gpt-4o-mini" in [m.id for m in models.data]


@pytest.mark.parametrize(("which", "error", "code"), [
    ("garbage", openai.AuthenticationError, "credential_malformed"),
    ("typo", openai.AuthenticationError, "credential_malformed"),
    ("revoked", openai.AuthenticationError, "key_revoked"),
    ("wrong_network", openai.PermissionDeniedError, "network_not_allowed"),
    ("wrong_country", openai.PermissionDeniedError, "country_not_allowed"),
    ("globex", openai.PermissionDeniedError, "network_not_allowed"),
])
def test_refused_keys_raise_the_right_exception_and_never_reach_the_app(
        served: Served, which: str, error: type[openai.APIStatusError], code: str) -> None:
    good = served.keys["good"]
    key = {"garbage": "sk-proj-0123456789abcdefghijklmnopqrstuvwxyz",
           "typo": good[:-1] + ("a" if good[-1] != "a" else "b")}.get(which) \
        or served.keys[which]
    before = list(served.upstream.state.seen)
    with pytest.raises(error) as caught:
        served.client(key).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert caught.value.code == code
    assert served.upstream.state.seen == before


def test_tenant_named_by_the_request_is_checked_not_trusted(served: Served) -> None:
    client = served.client(served.keys["good"]).with_options(
        default_headers={"x-tenant-id": "globex"})
    before = _seen(served)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.models.list()
    assert caught.value.code == "tenant_mismatch"
    assert _seen(served) == before


def test_health_and_metrics_are_public(served: Served) -> None:
    assert httpx.get(f"{served.base}/healthz").text == "ok"
    metrics = httpx.get(f"{served.base}/metrics").text
    assert 'gatekeeper_decisions_total{outcome="refuse",reason="key_revoked"}' in metrics
    assert served.keys["good"] not in metrics


def _cli(served: Served, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gatekeeper.cli.main", "keys", "--policy",
                           str(served.policy_path), *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_revocation_by_the_cli_reaches_the_running_server(served: Served) -> None:
    created = _cli(served, "--json", "create", "--tenant", "acme")
    assert created.returncode == 0, created.stderr
    made = json.loads(created.stdout)
    key, key_id = made["key"], made["record"]["key_id"]
    client = served.client(key)
    assert client.models.list().data
    revoked = _cli(served, "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    assert key not in revoked.stdout + revoked.stderr
    started = time.monotonic()
    while True:
        try:
            client.models.list()
        except openai.AuthenticationError as exc:
            assert exc.code == "key_revoked"
            break
        assert time.monotonic() - started < 5, "revocation did not reach the server"
        time.sleep(0.05)
    # the policy's keys.cache_ttl (1 s in the demo) bounds the delay
    assert time.monotonic() - started < 2.5


def test_the_demo_command_serves_what_its_banner_promises(tmp_path: Path) -> None:
    """`gatekeeper demo` (what `make demo` runs): its printed good key works, the others fail."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    demo = subprocess.Popen(
        [sys.executable, "-m", "gatekeeper.cli.main", "demo", "--port", str(port),
         "--dir", str(tmp_path / "demo")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert demo.stdout is not None
        banner: dict[str, str] = {}
        chat_body = None
        for line in demo.stdout:
            if "/v1/chat/completions" in line and " -d '" in line:
                chat_body = json.loads(line.split(" -d '", 1)[1].rsplit("'", 1)[0])
            label, _, value = line.strip().partition(":")
            if value.strip().startswith("gk_"):
                banner[label.strip()] = value.strip()
            if line.startswith("Ctrl-C"):
                break
        base = f"http://127.0.0.1:{port}"
        wait_until_up(base, what="the demo did not start")
        good = next(v for k, v in banner.items() if k.startswith("good key"))
        # the banner's own curl example, sent as it is printed
        printed = httpx.post(f"{base}/v1/chat/completions", json=chat_body,
                             headers={"authorization": f"Bearer {good}"})
        assert printed.status_code == 200, printed.text
        served = Served(base, {}, None, tmp_path)
        assert served.client(good).chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES).choices
        revoked = next(v for k, v in banner.items() if k.startswith("revoked key"))
        with pytest.raises(openai.AuthenticationError):
            served.client(revoked).models.list()
    finally:
        demo.terminate()
        demo.communicate(timeout=10)
