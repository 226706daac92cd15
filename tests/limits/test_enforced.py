"""Limits on the request path: one store call per allowed request, none for a refused
credential; exact under concurrency; 429s with their headers; slots released exactly once;
tokens reconciled with the upstream's usage."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from typing import Any

import anyio
import pytest

from gatekeeper import Gatekeeper, MemoryStore, key_admin
from gatekeeper import admission as admission_module
from gatekeeper.clock import ManualClock
from gatekeeper.limits.plan import CounterAnswer, Lease, Plan
from gatekeeper.policy.load import compile_policy
from gatekeeper.request_body import BodyFacts, quick_read
from gatekeeper.store.counters import Correction, CounterStore
from gatekeeper.store.memory_counters import MemoryCounterStore
from gatekeeper.store.memory_plan import UNIT_NAMES, Compiled, Costs
from gatekeeper.types import Message, Receive, Scope, Send
from tests.conftest import CHAT, PEPPER, POLICY, Recorder, asgi_request, make_env

pytestmark = pytest.mark.anyio

CLIENT = ("192.0.2.10", 40000)


class Counting(MemoryCounterStore):
    """The real memory store, counting the calls made into it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def apply_now(self, plan: Plan, now: float) -> list[CounterAnswer]:
        self.calls.append("apply")
        return super().apply_now(plan, now)

    def take(self, plan: Compiled, costs: Costs, now: float) -> list[Lease] | None:
        leases = super().take(plan, costs, now)
        if leases is not None:  # a refusal is answered by apply_now, which counts itself
            self.calls.append("apply")
        return leases

    def give(self, plan: Compiled, leases: Sequence[Lease], reserved: Costs, actual: Costs,
             now: float) -> int:
        self.calls.append("settle")
        if actual is not reserved:
            self.reconciled += [(UNIT_NAMES[c.unit], reserved[c.unit], actual[c.unit])
                                for c in plan]
        released = super().give(plan, leases, reserved, actual, now)
        if leases:
            self.released.append(released)
        return released

    def settle_now(self, leases: Sequence[Lease], corrections: Sequence[Correction],
                   now: float) -> int:
        self.calls.append("settle")
        self.reconciled += [(c.unit, reserved, actual) for c, reserved, actual in corrections]
        released = super().settle_now(leases, corrections, now)
        if leases:
            self.released.append(released)
        return released

    released: list[int]
    reconciled: list[tuple[str, int, int]]

    def reset(self) -> None:
        self.calls, self.released, self.reconciled = [], [], []


def limited(limits: dict[str, Any], **tenant: Any) -> dict[str, Any]:
    return {"routes": {"protect": ["/v1/*"]},
            "tenants": {"acme": {"limits": limits, **tenant}, "free": {}}}


async def gate(policy: dict[str, Any], app: Any = None, clock: Any = None,
               counters: CounterStore | None = None) -> tuple[Gatekeeper, dict[str, str], Any]:
    compiled = compile_policy(policy)
    store = MemoryStore()
    app = app or Recorder()
    gk = Gatekeeper(app, compiled, store=store, pepper=PEPPER, clock=clock, counters=counters)
    keys = {}
    for name, tenant in (("acme", "acme"), ("acme2", "acme"), ("free", "free")):
        keys[name], _ = await key_admin.create_key(store, PEPPER, compiled, tenant,
                                                   (clock or ManualClock()).now())
    return gk, keys, app


def auth(key: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", b"Bearer " + key.encode())]


def status(sent: list[Message]) -> int:
    return int(sent[0]["status"])


def headers_of(sent: list[Message]) -> dict[bytes, bytes]:
    return dict(sent[0]["headers"])


async def test_one_store_call_per_allowed_request_and_none_for_a_refused_credential() -> None:
    counters = Counting()
    counters.reset()
    gk, keys, app = await gate(limited({"requests": "100/minute"}), counters=counters)
    for _ in range(3):
        assert status(await asgi_request(gk, "/v1/models", auth(keys["acme"]))) == 200
    assert counters.calls == ["apply"] * 3  # one per request, reused record or not
    counters.reset()
    forged = keys["acme"][:-1] + ("A" if keys["acme"][-1] != "A" else "B")
    unknown = keys["acme"][:3] + "Z" * 12 + keys["acme"][15:]
    for headers in (auth(forged), auth(unknown), [], auth("sk-not-ours")):
        assert status(await asgi_request(gk, "/v1/models", headers)) == 401
    assert counters.calls == []  # nothing charged before the secret is verified
    assert status(await asgi_request(gk, "/v1/models", auth(keys["free"]))) == 200
    assert counters.calls == []  # a tenant without limits pays nothing
    assert len(app.paths) == 4


async def test_a_tight_request_limit_answers_429_with_retry_after_and_the_app_never_sees_it(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    gk, keys, app = await gate(limited({"requests": "2/minute"}), clock=clock)
    first = await asgi_request(gk, "/v1/models", auth(keys["acme"]))
    h = headers_of(first)
    assert (h[b"x-ratelimit-limit-requests"], h[b"x-ratelimit-remaining-requests"]) == \
        (b"2", b"1")
    assert h[b"x-ratelimit-reset-requests"] == b"30s"
    assert status(await asgi_request(gk, "/v1/models", auth(keys["acme"]))) == 200
    with caplog.at_level(logging.INFO, logger="gatekeeper.audit"):
        refused = await asgi_request(gk, "/v1/models", auth(keys["acme"]))
    assert status(refused) == 429
    h = headers_of(refused)
    assert h[b"retry-after"] == b"30" and h[b"retry-after-ms"] == b"30000"
    assert h[b"x-ratelimit-remaining-requests"] == b"0"
    assert json.loads(refused[1]["body"])["error"]["code"] == "rate_limited"
    assert len(app.paths) == 2
    line = json.loads(caplog.records[-1].getMessage())
    assert line["reason"] == "rate_limited" and line["detail"] == "key requests 2/60s"
    assert keys["acme"] not in caplog.text
    # another key of the tenant has its own counter; after the wait the first passes again
    assert status(await asgi_request(gk, "/v1/models", auth(keys["acme2"]))) == 200
    clock.advance(30)
    assert status(await asgi_request(gk, "/v1/models", auth(keys["acme"]))) == 200
    sample = gk.metrics.registry.get_sample_value
    assert sample("gatekeeper_decisions_total",
                  {"outcome": "refuse", "reason": "rate_limited"}) == 1
    assert sample("gatekeeper_decisions_total", {"outcome": "allow", "reason": "ok"}) == 4


async def test_tenant_and_client_scopes_are_shared_across_keys() -> None:
    gk, keys, _ = await gate(limited({"per_tenant": {"requests": "3/hour"},
                                      "per_client": {"requests": "2/hour"}}))
    other = ("192.0.2.99", 1)
    results = [
        status(await asgi_request(gk, "/v1/models", auth(keys["acme"]), client=CLIENT)),
        status(await asgi_request(gk, "/v1/models", auth(keys["acme2"]), client=CLIENT)),
        status(await asgi_request(gk, "/v1/models", auth(keys["acme2"]), client=CLIENT)),
        status(await asgi_request(gk, "/v1/models", auth(keys["acme2"]), client=other)),
        status(await asgi_request(gk, "/v1/models", auth(keys["acme"]), client=other)),
    ]
    # the client refusal charged nothing, so the tenant still had room for the fourth
    assert results == [200, 200, 429, 200, 429]


async def test_200_concurrent_requests_against_a_limit_of_50_allow_exactly_50() -> None:
    started = anyio.Event()

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        await started.wait()  # hold every allowed request until all have been decided
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    for limits in ({"requests": "50/hour"}, {"concurrency": 50}):
        gk, keys, _ = await gate(limited(limits), app=slow)
        codes: list[int] = []

        async def one(gk: Gatekeeper = gk, key: str = keys["acme"],
                      codes: list[int] = codes) -> None:
            codes.append(status(await asgi_request(gk, "/v1/models", auth(key))))

        async with anyio.create_task_group() as tg:
            for _ in range(200):
                tg.start_soon(one)
            while len(codes) < 150:  # the 150 refusals answer while 50 are held
                await anyio.sleep(0.001)
            started.set()
        assert codes.count(200) == 50 and codes.count(429) == 150, limits
        started = anyio.Event()


async def test_slots_are_released_exactly_once_however_the_exchange_ends() -> None:
    release = anyio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        mode = dict(scope["headers"]).get(b"x-mode", b"")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        if mode == b"raise":
            raise RuntimeError("upstream broke")
        if mode == b"hang":
            await release.wait()
        while (await receive())["type"] != "http.disconnect":
            pass

    counters = Counting()
    counters.reset()
    gk, keys, _ = await gate(limited({"concurrency": 1}), app=app, counters=counters)
    key = keys["acme"]

    async def run(mode: bytes) -> None:
        sent: list[Message] = []
        disconnected = anyio.Event()

        async def receive() -> Message:
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            sent.append(message)
            if message.get("more_body"):
                disconnected.set()

        scope = {"type": "http", "method": "GET", "path": "/v1/models", "root_path": "",
                 "headers": [*auth(key), (b"x-mode", mode)], "client": CLIENT}
        await gk(scope, receive, send)

    await run(b"disconnect")
    assert counters.released == [1]
    with pytest.raises(RuntimeError):
        await run(b"raise")
    assert counters.released == [1, 1]
    async with anyio.create_task_group() as tg:
        tg.start_soon(run, b"hang")
        await anyio.sleep(0.01)
        # the slot is held: a second request is refused while the first hangs
        assert status(await asgi_request(gk, "/v1/models", auth(key))) == 429
        tg.cancel_scope.cancel()
    assert counters.released == [1, 1, 1]
    assert counters.calls.count("settle") == 3
    await run(b"disconnect")  # and the slot is free again: taken, then released once
    assert counters.released == [1, 1, 1, 1]


async def test_a_slot_whose_holder_vanished_expires_after_its_lease() -> None:
    clock = ManualClock()
    gk, keys, _ = await gate(limited({"concurrency": 1, "concurrency_lease": 30}), clock=clock)
    plan_store = gk.runtime.counters
    assert status(await asgi_request(gk, "/v1/models", auth(keys["acme"]))) == 200
    from gatekeeper.limits.plan import build_plan, credential_part
    from gatekeeper.principal import CredentialKind

    key_id = keys["acme"][3:15]
    plan = build_plan("acme", credential_part(CredentialKind.API_KEY, key_id), None,
                      gk.policy.tenants["acme"].limits)
    # a holder that took the slot and died: charged, never settled
    assert (await plan_store.apply(plan, clock.now()))[0].allowed
    assert status(await asgi_request(gk, "/v1/models", auth(keys["acme"]))) == 429
    clock.advance(29)
    assert status(await asgi_request(gk, "/v1/models", auth(keys["acme"]))) == 429
    clock.advance(1.5)
    assert status(await asgi_request(gk, "/v1/models", auth(keys["acme"]))) == 200


async def test_tokens_are_reserved_then_reconciled_with_the_usage_of_json_and_streams() -> None:
    counters = Counting()
    counters.reset()
    policy = {**POLICY, "tenants": {**POLICY["tenants"], "acme": {
        **POLICY["tenants"]["acme"], "limits": {"tokens": "100000/day"},
        "request": {"default_max_tokens": 50}}}}
    env = await make_env(policy, counters=counters)
    body = {**CHAT, "max_tokens": 40}
    # a small body under a token limit alone is estimated without parsing it
    raw = json.dumps(body).encode()
    estimate = quick_read(raw, 50, completes=True)
    assert isinstance(estimate, BodyFacts) and estimate.tokens > 40
    async with env.client() as client:
        key = {"authorization": f"Bearer {env.keys['acme']}"}
        plain = await client.post("/v1/chat/completions", content=raw,
                                  headers={**key, "content-type": "application/json"})
        assert plain.status_code == 200
        assert plain.headers["x-ratelimit-limit-tokens"] == "100000"
        # the estimate was reserved before the call (the header is this request's answer)
        assert int(plain.headers["x-ratelimit-remaining-tokens"]) == 100000 - estimate.tokens
        used = plain.json()["usage"]["total_tokens"]
        assert counters.reconciled == [("tokens", estimate.tokens, used)]
        stream = await client.post("/v1/chat/completions", headers=key, json={
            **body, "stream": True, "stream_options": {"include_usage": True}})
        assert stream.status_code == 200 and "[DONE]" in stream.text
        usage = [json.loads(line[6:])["usage"] for line in stream.text.splitlines()
                 if line.startswith("data: {") and '"usage"' in line][-1]
        assert counters.reconciled[-1][2] == usage["total_tokens"]
        before = len(counters.reconciled)
        bare = await client.post("/v1/chat/completions", headers=key,
                                 json={**body, "stream": True})
        assert bare.status_code == 200
        assert len(counters.reconciled) == before  # no usage seen: the reservation stands
        third = await client.post("/v1/chat/completions", content=raw,
                                  headers={**key, "content-type": "application/json"})
        remaining = int(third.headers["x-ratelimit-remaining-tokens"])
        # 100000/day refills about 1.16 tokens a second: allow the test's own seconds; the
        # stream without usage keeps its own (slightly larger) reservation
        streamed = quick_read(json.dumps({**body, "stream": True}).encode(), 50, True)
        assert streamed is not None
        expected = 100000 - used - usage["total_tokens"] - streamed.tokens - estimate.tokens
        assert expected <= remaining <= expected + 3


async def test_ask_usage_makes_a_stream_report_its_usage_so_it_is_reconciled() -> None:
    counters = Counting()
    counters.reset()
    policy = {**POLICY, "tenants": {**POLICY["tenants"], "acme": {
        **POLICY["tenants"]["acme"], "limits": {"tokens": "100000/day"},
        "request": {"ask_usage": True}}}}
    env = await make_env(policy, counters=counters)
    async with env.client() as client:
        key = {"authorization": f"Bearer {env.keys['acme']}"}
        stream = await client.post("/v1/chat/completions", headers=key,
                                   json={**CHAT, "stream": True})
    assert stream.status_code == 200
    usage = [json.loads(line[6:])["usage"] for line in stream.text.splitlines()
             if line.startswith("data: {") and '"usage"' in line]
    assert len(usage) == 1  # the client did not ask; gatekeeper did, for it
    assert counters.reconciled[-1][2] == usage[0]["total_tokens"]


@pytest.mark.parametrize(("body", "code", "status"), [
    ({**CHAT, "model": "gpt-4o"}, "model_not_allowed", 403),
    ({**CHAT, "max_tokens": 5000}, "max_tokens_too_large", 400),
    ({**CHAT, "logit_bias": {"50256": -100}}, "field_not_allowed", 403),
    ("{not json", "body_invalid", 400),
    ({**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}, "body_too_large", 413),
])
async def test_the_request_policy_refuses_before_any_counter_is_charged(
        body: Any, code: str, status: int) -> None:
    counters = Counting()
    counters.reset()
    policy = {**POLICY, "tenants": {**POLICY["tenants"], "acme": {
        **POLICY["tenants"]["acme"], "limits": {"requests": "100/minute"},
        "request": {"models": ["gpt-4o-mini*"], "max_tokens": 4096,
                    "forbidden_fields": ["logit_bias"], "max_body_bytes": 2048}}}}
    env = await make_env(policy, counters=counters)
    async with env.client() as client:
        key = {"authorization": f"Bearer {env.keys['acme']}",
               "content-type": "application/json"}
        content = body if isinstance(body, str) else json.dumps(body)
        refused = await client.post("/v1/chat/completions", headers=key, content=content)
        assert refused.status_code == status
        assert refused.json()["error"]["code"] == code
        assert counters.calls == [] and env.seen == []
        allowed = await client.post("/v1/chat/completions", headers=key, json=CHAT)
        assert allowed.status_code == 200 and counters.calls == ["apply"]
        assert allowed.json()["choices"][0]["message"]["content"].endswith("hi")


class Broken(MemoryCounterStore):
    def apply_now(self, plan: Plan, now: float) -> list[CounterAnswer]:
        raise ConnectionError("counter backend down")

    def take(self, plan: Compiled, costs: Costs, now: float) -> list[Lease] | None:
        raise ConnectionError("counter backend down")


async def test_a_counter_store_failure_fails_closed_with_503() -> None:
    gk, keys, app = await gate(limited({"requests": "5/minute"}), counters=Broken())
    sent = await asgi_request(gk, "/v1/models", auth(keys["acme"]))
    assert status(sent) == 503
    assert json.loads(sent[1]["body"])["error"]["code"] == "store_unavailable"
    assert app.paths == []


async def test_a_counter_store_outage_logs_one_line_per_interval_not_one_per_request(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admission_module, "_store_log", [-math.inf, 0])
    gk, keys, app = await gate(limited({"requests": "5/minute"}), counters=Broken())
    with caplog.at_level(logging.ERROR, logger="gatekeeper"):
        for _ in range(20):
            assert status(await asgi_request(gk, "/v1/models", auth(keys["acme"]))) == 503
        lines = [r.getMessage() for r in caplog.records if "limits not checked" in r.getMessage()]
        assert len(lines) == 1 and "counter backend down" in lines[0]
        monkeypatch.setattr(admission_module, "_store_log",
                            [admission_module._store_log[0] - admission_module.STORE_LOG_INTERVAL,
                             admission_module._store_log[1]])
        assert status(await asgi_request(gk, "/v1/models", auth(keys["acme"]))) == 503
        lines = [r.getMessage() for r in caplog.records if "limits not checked" in r.getMessage()]
    assert len(lines) == 2 and "(19 more refused since the last line)" in lines[1]
    assert app.paths == []


async def test_counts_survive_a_reload() -> None:
    gk, keys, _ = await gate(limited({"requests": "1/hour"}))
    assert status(await asgi_request(gk, "/v1/models", auth(keys["acme"]))) == 200
    gk.reload(limited({"requests": "1/hour"}, allowed_networks=["192.0.2.0/24"]))
    assert status(await asgi_request(gk, "/v1/models", auth(keys["acme"]))) == 429


async def test_replay_counts_limits_on_recorded_time() -> None:
    from gatekeeper.replay import RequestRecord, replay

    policy = compile_policy(limited({"requests": "10/minute", "concurrency": 1}))
    store = MemoryStore()
    key, _ = await key_admin.create_key(store, PEPPER, policy, "acme", 1e9)
    h = (("authorization", f"Bearer {key}"),)

    def rec(ts: float, duration_ms: float = 0) -> RequestRecord:
        return RequestRecord.from_dict({"ts": ts, "client_ip": "192.0.2.1", "method": "GET",
                                        "path": "/v1/models", "headers": dict(h),
                                        "duration_ms": duration_ms})

    decisions = await replay([rec(1e9), rec(1e9 + 1, 5000), rec(1e9 + 2), rec(1e9 + 61)],
                             policy, store, PEPPER)
    # the second holds the only slot for 5 s, so the third is refused on concurrency; the
    # fourth comes after both the slot and the minute
    assert [d.reason.code for d in decisions] == ["ok", "ok", "concurrency_limited", "ok"]


async def test_a_keys_own_limit_narrows_a_tenant_without_limits() -> None:
    policy = compile_policy({"routes": {"protect": ["/v1/*"]}, "tenants": {"acme": {}}})
    store = MemoryStore()
    gk = Gatekeeper(Recorder(), policy, store=store, pepper=PEPPER)
    narrow, _ = await key_admin.create_key(store, PEPPER, policy, "acme", 1e9,
                                           limits={"requests": "1/hour"})
    free, _ = await key_admin.create_key(store, PEPPER, policy, "acme", 1e9)
    codes = [status(await asgi_request(gk, "/v1/models", auth(k)))
             for k in (narrow, narrow, free, free)]
    assert codes == [200, 429, 200, 200]


async def test_a_monthly_quota_rolls_over_with_the_utc_month() -> None:
    clock = ManualClock(1_701_388_799.0)  # 2023-11-30T23:59:59Z
    gk, keys, _ = await gate(limited({"monthly_requests": 2}), clock=clock)
    codes = []
    for _ in range(3):
        codes.append(status(await asgi_request(gk, "/v1/models", auth(keys["acme"]))))
    clock.advance(1.0)  # 2023-12-01T00:00:00Z: a new month
    sent = await asgi_request(gk, "/v1/models", auth(keys["acme"]))
    codes.append(status(sent))
    assert codes == [200, 200, 429, 200]


async def test_replay_checks_recorded_bodies_and_reserves_their_estimate() -> None:
    from gatekeeper.replay import RequestRecord, replay

    policy = compile_policy({"routes": {"protect": ["/v1/*"]}, "tenants": {"acme": {
        "limits": {"tokens": "3000/hour"}, "request": {"models": ["gpt-4o-mini"]}}}})
    store = MemoryStore()
    key, _ = await key_admin.create_key(store, PEPPER, policy, "acme", 1e9)

    def rec(ts: float, body: Any) -> RequestRecord:
        return RequestRecord.from_dict({
            "ts": ts, "client_ip": "192.0.2.1", "method": "POST",
            "path": "/v1/chat/completions", "body": body,
            "headers": {"authorization": f"Bearer {key}", "content-type": "application/json"}})

    small = {**CHAT, "max_tokens": 1000}
    decisions = await replay([rec(1e9, {**CHAT, "model": "gpt-4o"}), rec(1e9 + 1, small),
                              rec(1e9 + 2, small), rec(1e9 + 3, small)], policy, store, PEPPER)
    # no usage recorded: each reservation (prompt + 1000) stands, so the third is refused
    assert [d.reason.code for d in decisions] == ["model_not_allowed", "ok", "ok",
                                                  "tokens_limited"]


class BothCapabilities(MemoryStore, MemoryCounterStore):
    """A store offering key records and counters in one object, as the Redis store does."""

    def __init__(self) -> None:
        MemoryStore.__init__(self)
        MemoryCounterStore.__init__(self)


async def test_a_store_that_also_counts_is_used_for_the_limits() -> None:
    store = BothCapabilities()
    policy = compile_policy(limited({"requests": "1/hour"}))
    gk = Gatekeeper(Recorder(), policy, store=store, pepper=PEPPER)
    assert gk.runtime.counters is store
    key, _ = await key_admin.create_key(store, PEPPER, policy, "acme", 1e9)
    codes = [status(await asgi_request(gk, "/v1/models", auth(key))) for _ in range(2)]
    assert codes == [200, 429] and len(store) == 1  # the one counter lives in that store
