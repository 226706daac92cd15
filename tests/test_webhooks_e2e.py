"""Owner webhooks end to end: a real receiver (uvicorn on a loopback port) gets a signed
webhook when a test key crosses 80% of its budget and when it is suspended through the CLI;
a receiver that hangs or fails never slows a request; retries back off; a full queue drops."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import yaml

from gatekeeper import Gatekeeper, MemoryStore, compile_policy, key_admin
from gatekeeper.cli.main import main
from gatekeeper.clock import SystemClock
from gatekeeper.metrics import Metrics
from gatekeeper.policy.notify import KEY_LEAKED, KEY_SUSPENDED
from gatekeeper.types import Receive, Scope, Send
from gatekeeper.webhook_signature import HEADER, verify_webhook
from gatekeeper.webhooks import Notifier, Target
from tests.conftest import PEPPER, Recorder, bearer
from tests.serving import serving

SECRET_ENV = "GK_TEST_HOOK_SECRET"
SECRET = "whsec-0123456789abcdef-test"
CLIENT = ("192.0.2.10", 40000)


class Receiver:
    """A webhook receiver: records each delivery (arrival time, headers, body, whether its
    signature verifies); answers 500 to the first ``fail_first``, or holds each request
    ``hang`` seconds before answering."""

    def __init__(self, fail_first: int = 0, hang: float = 0.0, status: int = 500) -> None:
        self.fail_first, self.hang, self.status = fail_first, hang, status
        self.got: list[tuple[float, dict[str, str], bytes, bool]] = []
        self.finished = 0
        self.released = False
        """Set at the end of a test: a hanging receiver answers, and its server stops."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        signed = verify_webhook(SECRET.encode(), headers.get(HEADER), body, time.time())
        self.got.append((time.monotonic(), headers, body, signed))
        if self.hang:
            until = time.monotonic() + self.hang
            while not self.released and time.monotonic() < until:
                await asyncio.sleep(0.02)
        status = self.status if len(self.got) <= self.fail_first else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        self.finished += 1

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, _, body, _ in self.got]


async def arrived(receiver: Receiver, count: int, seconds: float = 15.0) -> None:
    with anyio.fail_after(seconds):
        while len(receiver.got) < count:
            await anyio.sleep(0.01)


async def counted(metrics: Metrics, event: str, result: str, seconds: float) -> None:
    """Wait until one webhook of ``event`` is counted as ``result``."""
    with anyio.fail_after(seconds):
        while metrics.registry.get_sample_value(
                "gatekeeper_webhooks_total", {"event": event, "result": result}) != 1:
            await anyio.sleep(0.02)


def notify_policy(url: str, limits: dict[str, Any]) -> dict[str, Any]:
    return {"routes": {"protect": ["/v1/*"]},
            "tenants": {"acme": {"limits": limits,
                                 "notify": {"url": url, "secret_env": SECRET_ENV}},
                        "quiet": {"limits": limits}}}


async def gate(policy: dict[str, Any], **kwargs: Any) -> tuple[Gatekeeper, dict[str, str]]:
    compiled = compile_policy(policy)
    store = MemoryStore()
    gk = Gatekeeper(Recorder(), compiled, store=store, pepper=PEPPER, **kwargs)
    keys = {}
    for tenant in ("acme", "quiet"):
        keys[tenant], _ = await key_admin.create_key(store, PEPPER, compiled, tenant,
                                                     time.time())
    return gk, keys


def client(gk: Gatekeeper) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=gk, client=CLIENT),
                             base_url="http://gatekeeper.test")


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)


@pytest.mark.anyio
async def test_a_key_crossing_80_percent_of_its_budget_gets_one_signed_webhook(
        secret: None) -> None:
    receiver = Receiver()
    with serving(receiver) as base:
        gk, keys = await gate(notify_policy(f"{base}/hook", {"daily_requests": 10}))
        try:
            async with client(gk) as http:
                for _ in range(7):
                    assert (await http.get("/v1/models", headers=bearer(keys["acme"]))
                            ).status_code == 200
                for _ in range(10):  # a tenant without a target: nothing is sent for it
                    await http.get("/v1/models", headers=bearer(keys["quiet"]))
                await anyio.sleep(0.3)
                assert receiver.got == []
                assert (await http.get("/v1/models", headers=bearer(keys["acme"]))
                        ).status_code == 200  # the 8th of 10: 80%
                await arrived(receiver, 1)
                for _ in range(2):
                    await http.get("/v1/models", headers=bearer(keys["acme"]))
                await arrived(receiver, 2)  # the 10th: 100%
                for _ in range(3):  # refused: the exhausted quota is not announced again
                    assert (await http.get("/v1/models", headers=bearer(keys["acme"]))
                            ).status_code == 429
                await anyio.sleep(0.3)
            # only a tenant with a target has a watch: the others pay one attribute read
            watches = {r.decision.tenant: r.admission.watch
                       for r in gk.runtime.decisions.values() if r.admission is not None}
            assert watches["quiet"] is None and watches["acme"] is not None
        finally:
            await gk.shutdown()
    events = receiver.events()
    assert [e["type"] for e in events] == ["budget.warning", "budget.exhausted"]
    assert all(signed for *_, signed in receiver.got)
    warning = events[0]
    assert warning["tenant"] == "acme" and keys["acme"].find(warning["key_id"]) > 0
    assert warning["data"] | {} == {"scope": "key", "unit": "requests",
                                    "window": warning["data"]["window"], "limit": 10,
                                    "used": 8, "percent": 80}
    headers = receiver.got[0][1]
    assert headers["gatekeeper-event"] == "budget.warning"
    assert headers["gatekeeper-delivery"] == warning["id"]
    assert keys["acme"] not in receiver.got[0][2].decode()  # an id, never the key
    sample = gk.metrics.registry.get_sample_value
    assert sample("gatekeeper_webhooks_total",
                  {"event": "budget.warning", "result": "delivered"}) == 1


def test_a_key_suspended_through_the_cli_gets_a_signed_webhook(
        secret: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GATEKEEPER_PEPPER", PEPPER.decode())
    receiver = Receiver()
    with serving(receiver) as base:
        policy = tmp_path / "policy.yaml"
        policy.write_text(yaml.safe_dump({
            "store": "sqlite:///keys.db",
            "tenants": {"acme": {"notify": {"url": f"{base}/hook",
                                            "secret_env": SECRET_ENV}}, "quiet": {}}}))
        assert main(["keys", "create", "--tenant", "acme", "--policy", str(policy),
                     "--json"]) == 0
        key_id = json.loads(capsys.readouterr().out)["record"]["key_id"]
        assert main(["keys", "suspend", key_id, "--policy", str(policy)]) == 0
        said = capsys.readouterr().err
        assert len(receiver.got) == 1  # delivered before the command returned
        assert main(["keys", "reinstate", key_id, "--policy", str(policy)]) == 0
        assert main(["keys", "revoke", key_id, "--policy", str(policy)]) == 0
        capsys.readouterr()
        assert main(["keys", "create", "--tenant", "quiet", "--policy", str(policy),
                     "--json"]) == 0
        quiet = json.loads(capsys.readouterr().out)["record"]["key_id"]
        assert main(["keys", "suspend", quiet, "--policy", str(policy)]) == 0
        assert "notified" not in capsys.readouterr().err
    events = receiver.events()
    assert [(e["type"], e["key_id"], e["tenant"]) for e in events] == [
        (KEY_SUSPENDED, key_id, "acme"), ("key.revoked", key_id, "acme")]
    assert all(signed for *_, signed in receiver.got)
    assert f"notified http://127.0.0.1:{base.rsplit(':', 1)[1]}/#" in said
    assert "hook" not in said.split("/#")[0]  # the path is not shown


def test_the_cli_warns_when_the_owner_could_not_be_told(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GATEKEEPER_PEPPER", PEPPER.decode())
    monkeypatch.delenv(SECRET_ENV, raising=False)
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({
        "store": "sqlite:///keys.db",
        "tenants": {"acme": {"notify": {"url": "http://127.0.0.1:9/hook",
                                        "secret_env": SECRET_ENV}}}}))
    assert main(["keys", "create", "--tenant", "acme", "--policy", str(policy), "--json"]) == 0
    key_id = json.loads(capsys.readouterr().out)["record"]["key_id"]
    assert main(["keys", "suspend", key_id, "--policy", str(policy)]) == 0  # it stands
    err = capsys.readouterr().err
    assert "warning: key.suspended not sent" in err and "secret_env" in err


@pytest.mark.anyio
async def test_a_hanging_receiver_never_slows_a_request(secret: None) -> None:
    receiver = Receiver(hang=6.0)
    with serving(receiver, timeout_graceful_shutdown=1) as base:
        notifier = Notifier(timeout=4.0, attempts=1)
        gk, keys = await gate(notify_policy(f"{base}/hook", {"daily_requests": 100}),
                              notifier=notifier)
        try:
            async with client(gk) as http:
                async def timed() -> float:
                    started = time.perf_counter()
                    reply = await http.get("/v1/models", headers=bearer(keys["acme"]))
                    assert reply.status_code == 200
                    return time.perf_counter() - started

                before = [await timed() for _ in range(79)]  # no webhook in flight
                await timed()  # the 80th: a webhook to the hanging receiver
                await arrived(receiver, 1)
                hanging = [await timed() for _ in range(15)]
                # every request completed while the receiver was still holding the webhook
                assert receiver.finished == 0
        finally:
            await gk.shutdown()
            receiver.released = True
    print(f"median request latency: {statistics.median(before) * 1e3:.2f} ms with no "
          f"webhook, {statistics.median(hanging) * 1e3:.2f} ms while the receiver hangs")
    assert max(hanging) < receiver.hang / 2  # never waited for the receiver
    sample = gk.metrics.registry.get_sample_value
    # the attempt's own deadline ended it, or the shutdown did: never delivered
    assert sample("gatekeeper_webhooks_total",
                  {"event": "budget.warning", "result": "delivered"}) == 0


@pytest.mark.anyio
async def test_a_receiver_that_hangs_is_given_up_on_at_the_attempt_deadline() -> None:
    receiver = Receiver(hang=5.0)
    metrics = Metrics()
    with serving(receiver, timeout_graceful_shutdown=1) as base:
        notifier = Notifier(metrics, timeout=0.5, attempts=2, backoff=0.1)
        notifier.targets = {"acme": _target(base)}
        notifier.start()
        try:
            started = time.monotonic()
            assert notifier.key_changed(KEY_LEAKED, "acme", "AbCdEfGhIjKl", time.time())
            await counted(metrics, KEY_LEAKED, "failed", 15)
            took = time.monotonic() - started
            finished = receiver.finished
        finally:
            await notifier.stop()
            receiver.released = True
    assert len(receiver.got) == 2 and finished == 0
    assert took >= 1.0  # two attempts of 0.5 s, each cut at its deadline


@pytest.mark.anyio
async def test_a_failing_receiver_is_retried_with_back_off_until_it_accepts() -> None:
    receiver = Receiver(fail_first=2)
    metrics = Metrics()
    with serving(receiver) as base:
        notifier = Notifier(metrics, attempts=5, backoff=0.2)
        notifier.targets = {"acme": _target(base)}
        notifier.start()
        try:
            notifier.key_changed(KEY_SUSPENDED, "acme", "AbCdEfGhIjKl", time.time())
            await arrived(receiver, 3)
            await counted(metrics, KEY_SUSPENDED, "delivered", 5)
        finally:
            await notifier.stop()
    times = [at for at, *_ in receiver.got]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(receiver.got) == 3
    # equal jitter: the first wait is 0.1-0.2 s, the second 0.2-0.4 s
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2, gaps
    assert len({headers["gatekeeper-delivery"] for _, headers, *_ in receiver.got}) == 1
    assert all(signed for *_, signed in receiver.got)


@pytest.mark.anyio
async def test_a_refusing_receiver_is_not_retried() -> None:
    receiver = Receiver(fail_first=5, status=400)
    metrics = Metrics()
    with serving(receiver) as base:
        notifier = Notifier(metrics, attempts=5, backoff=0.05)
        notifier.targets = {"acme": _target(base)}
        notifier.start()
        try:
            notifier.key_changed(KEY_SUSPENDED, "acme", "AbCdEfGhIjKl", time.time())
            await counted(metrics, KEY_SUSPENDED, "failed", 5)
            await anyio.sleep(0.3)
        finally:
            await notifier.stop()
    assert len(receiver.got) == 1


def test_a_full_queue_drops_with_a_metric_and_a_log_line(
        caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    notifier = Notifier(metrics, SystemClock(), queue_size=2)
    notifier.targets = {"acme": _target("https://hooks.example")}
    with caplog.at_level(logging.WARNING, logger="gatekeeper"):
        sent = [notifier.key_changed(KEY_SUSPENDED, "acme", "AbCdEfGhIjKl", 0.0)
                for _ in range(3)]
    assert sent == [True, True, False]
    assert metrics.registry.get_sample_value(
        "gatekeeper_webhooks_total", {"event": KEY_SUSPENDED, "result": "dropped"}) == 1
    assert any("dropped" in r.getMessage() for r in caplog.records)
    assert not any(SECRET in r.getMessage() for r in caplog.records)
    # another tenant, or an event the tenant did not ask for, is not even queued
    assert not notifier.key_changed(KEY_SUSPENDED, "globex", "AbCdEfGhIjKl", 0.0)


def _target(base: str) -> Target:
    return Target(f"{base}/hook", "endpoint", SECRET.encode(),
                  frozenset({KEY_SUSPENDED, KEY_LEAKED}))


def test_check_config_warns_about_an_unset_webhook_secret(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"tenants": {"acme": {"notify": {
        "url": "https://hooks.example/x", "secret_env": SECRET_ENV}}}}))
    assert main(["check-config", str(policy)]) == 0
    err = capsys.readouterr().err
    assert "tenants.acme.notify.secret_env" in err and "not set" in err
    monkeypatch.setenv(SECRET_ENV, SECRET)
    assert main(["check-config", str(policy)]) == 0
    assert "secret_env" not in capsys.readouterr().err


@pytest.mark.anyio
async def test_a_flagged_key_gets_one_signed_webhook(secret: None) -> None:
    receiver = Receiver()
    with serving(receiver) as base:
        gk, keys = await gate({"routes": {"protect": ["/v1/*"]}, "tenants": {
            "acme": {"countries": {"allow": ["DE"], "unknown": "flag"},
                     "notify": {"url": f"{base}/hook", "secret_env": SECRET_ENV}},
            "quiet": {}}})
        try:
            async with client(gk) as http:
                # 192.0.2.0/24 is in no country: unknown, flagged and let through
                for _ in range(3):
                    assert (await http.get("/v1/models", headers=bearer(keys["acme"]))
                            ).status_code == 200
                    gk.runtime.decisions.clear()  # a new record each time: flagged again
                await arrived(receiver, 1)
                await anyio.sleep(0.3)
        finally:
            await gk.shutdown()
    assert [e["type"] for e in receiver.events()] == ["key.flagged"]  # once per hour per key
    assert receiver.got[0][3] and "country_unknown" in receiver.events()[0]["data"]["signals"]
    assert gk.metrics.registry.get_sample_value("gatekeeper_flagged_total") == 3
