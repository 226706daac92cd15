"""The resale score on the live request path: the middleware judges each request of a known
key from the state before it (one request of lag), counts it after, and acts under
``enforce``: flag (header, audit, metric), throttle, block, suspend (stored; lifted only by
reinstating the key). ``shadow`` computes and audits the same and refuses nothing."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from gatekeeper import AuditLog, Gatekeeper, ManualClock, MemoryStore, compile_policy, key_admin
from gatekeeper.decision import Decision
from gatekeeper.principal import KeyStatus
from gatekeeper.store.base import Store
from gatekeeper.types import Message, Scope
from tests.conftest import PEPPER, Recorder, asgi_request

T0 = 1_800_000_000.0


def _policy(mode: str, thresholds: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"routes": {"protect": ["/v1/*"]}, "tenants": {"acme": {}, "quiet": {}},
            "resale": {"mode": mode, "thresholds": thresholds, "flag_header": True, **more}}


FLAG_THEN_BLOCK: dict[str, Any] = {"flag": 20, "throttle": None, "block": 50, "suspend": None}


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(record.getMessage()))


class Run:
    """A gatekeeper on a ManualClock in front of a recording app, with one key."""

    def __init__(self, policy: dict[str, Any], tenant: str = "acme",
                 store: Store | None = None) -> None:
        self.clock = ManualClock(T0)
        self.store = MemoryStore() if store is None else store
        self.audit = _Lines()
        logger = logging.getLogger(f"test.resale.{id(self)}")
        logger.setLevel(logging.INFO)
        logger.propagate = False
        logger.addHandler(self.audit)
        self.decisions: list[Decision] = []
        self.app = Recorder()
        self.gk = Gatekeeper(self.app, compile_policy(policy), store=self.store, pepper=PEPPER,
                             clock=self.clock, audit=AuditLog(logger), observer=self._observe)
        self.key, record = asyncio.run(key_admin.create_key(
            self.store, PEPPER, self.gk.policy, tenant, T0 - 60))
        self.key_id = record.key_id

    def _observe(self, scope: Scope, decision: Decision, now: float) -> None:
        self.decisions.append(decision)

    async def request(self, address: str, path: str = "/v1/models") -> list[Message]:
        return await asgi_request(self.gk, path,
                                  [(b"authorization", f"Bearer {self.key}".encode())],
                                  client=(address, 40000))

    async def fan_out(self, n: int, every: float = 5.0) -> list[tuple[int, dict[bytes, bytes]]]:
        """``n`` model listings, each from a network of its own: a key checker's sweep."""
        answers = []
        for i in range(n):
            sent = await self.request(f"198.18.{i}.7")
            start = sent[0]
            answers.append((start["status"], dict(start["headers"])))
            self.clock.advance(every)
        return answers

    def finish(self) -> None:
        asyncio.run(self.gk.shutdown())  # flushes the audit queue


def test_enforce_flags_then_blocks_one_request_late() -> None:
    run = Run(_policy("enforce", FLAG_THEN_BLOCK))
    answers = asyncio.run(run.fan_out(12))
    run.finish()
    statuses = [status for status, _ in answers]
    actions = [d.action for d in run.decisions]
    # the score before request i counts i requests: 3 listings (10), 4 (20) flags, from 8 on
    # the networks and listings reach 50
    assert actions[:4] == ["allow"] * 4
    assert actions[4:8] == ["flag"] * 4 and statuses[4:8] == [200] * 4
    assert all(h.get(b"x-gatekeeper-resale") == b"flag" for _, h in answers[4:8])
    assert b"x-gatekeeper-resale" not in answers[3][1]
    assert statuses[8:] == [403] * 4
    assert {d.reason.code for d in run.decisions[8:]} == {"resale_suspected"}
    assert len(run.app.paths) == 8, "a blocked request reached the app"
    events = [(line["would"], line["key_id"]) for line in run.audit.lines
              if line["event"] == "resale"]
    assert events == [("flag", run.key_id), ("block", run.key_id)]
    flagged = next(line for line in run.audit.lines if line["event"] == "resale")
    assert flagged["score"] == 20.0 and flagged["reasons"][0].startswith("model_listings=4")
    metrics = run.gk.metrics.registry
    assert metrics.get_sample_value("gatekeeper_resale_actions_total",
                                    {"action": "flag"}) == 4
    assert metrics.get_sample_value("gatekeeper_resale_actions_total",
                                    {"action": "block"}) == 4


def test_shadow_scores_and_audits_the_same_and_refuses_nothing() -> None:
    enforce, shadow = Run(_policy("enforce", FLAG_THEN_BLOCK)), \
        Run(_policy("shadow", FLAG_THEN_BLOCK))
    enforced = asyncio.run(enforce.fan_out(12))
    shadowed = asyncio.run(shadow.fan_out(12))
    enforce.finish()
    shadow.finish()
    assert [s for s, _ in shadowed] == [200] * 12
    assert all(b"x-gatekeeper-resale" not in h for _, h in shadowed)
    assert len(shadow.app.paths) == 12
    assert any(s == 403 for s, _ in enforced)

    def resale(run: Run) -> list[tuple[Any, ...]]:
        return [(line["ts"], line["would"], line["score"], tuple(line["reasons"]),
                 line["reason"]) for line in run.audit.lines if line["event"] == "resale"]

    assert resale(shadow) == resale(enforce) and len(resale(shadow)) == 2
    assert [line for line in shadow.audit.lines if line["event"] != "resale"] == []


def test_a_tenant_without_the_score_is_never_judged() -> None:
    policy = _policy("off", FLAG_THEN_BLOCK)
    policy["tenants"]["acme"] = {"resale": {"mode": "enforce"}}
    run = Run(policy, tenant="quiet")
    answers = asyncio.run(run.fan_out(12))
    run.finish()
    assert [s for s, _ in answers] == [200] * 12
    assert run.gk.resale.tracker.get(run.key_id) is None
    assert run.gk.runtime.resale is not None  # acme's is on


def test_no_stage_when_every_score_is_off() -> None:
    run = Run(_policy("off", FLAG_THEN_BLOCK))
    assert run.gk.runtime.resale is None


def test_throttle_passes_the_keys_own_pace_and_refuses_the_rest() -> None:
    run = Run(_policy("enforce", {"flag": None, "throttle": 20, "block": None,
                                  "suspend": None}))
    answers = asyncio.run(run.fan_out(40, every=2.0))
    run.finish()
    later = answers[4:]
    refused = [h for s, h in later if s == 429]
    passed = [h for s, h in later if s == 200]
    assert refused and passed
    assert all(h.get(b"x-gatekeeper-resale") == b"throttle" for h in passed)
    assert all(int(h[b"retry-after"]) >= 1 for h in refused)
    assert {d.reason.code for d in run.decisions[4:] if not d.allowed} == {"resale_throttled"}
    # the default baseline pace is 5 per 10 minutes, with a minute's burst: few pass
    assert len(passed) <= 3


def test_suspend_stores_the_status_until_the_key_is_reinstated() -> None:
    run = Run(_policy("enforce", {"flag": None, "throttle": None, "block": None,
                                  "suspend": 30}))

    async def main() -> list[int]:
        statuses = [s for s, _ in await run.fan_out(8)]
        for _ in range(10):  # the store write runs off the request path
            await asyncio.sleep(0)
        record = await key_admin.get_key(run.store, run.key_id)
        assert record.status is KeyStatus.SUSPENDED
        # reinstated by an operator (what `gatekeeper keys reinstate` does)
        await key_admin.set_status(run.store, run.key_id, KeyStatus.ACTIVE, run.clock.now())
        run.clock.advance(run.gk.policy.keys.cache_ttl + 2)
        statuses.append((await run.request("192.0.2.1"))[0]["status"])
        statuses.append((await run.request("192.0.2.1"))[0]["status"])
        return statuses

    statuses = asyncio.run(main())
    run.finish()
    assert statuses[:5] == [200] * 5 and statuses[5:8] == [401] * 3
    assert {d.reason.code for d in run.decisions[5:8]} == {"key_suspended"}
    assert statuses[8:] == [200, 200], "a reinstated key starts again clean"
    suspended = [line for line in run.audit.lines if line["event"] == "resale"]
    assert [line["would"] for line in suspended] == ["suspend"]


def test_inspect_shows_the_score_a_server_wrote_to_the_store(tmp_path: Path) -> None:
    import subprocess

    from gatekeeper import SQLiteStore
    from tests.test_cli import clean_env, cli_command

    path = tmp_path / "keys.db"
    run = Run(_policy("shadow", FLAG_THEN_BLOCK), store=SQLiteStore(path))
    asyncio.run(run.fan_out(12))
    run.finish()  # the lifespan's end writes the last batch of snapshots

    def inspect(*more: str) -> str:
        done = subprocess.run([*cli_command(), "inspect", run.key_id, "--store",
                               f"sqlite:///{path}", *more], capture_output=True, text=True,
                              timeout=60, env=clean_env(), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return done.stdout

    text = inspect()
    assert f"key {run.key_id}  tenant acme  status active" in text
    assert "(would block)" in text and "  networks=" in text and "  model_listings=" in text
    data = json.loads(inspect("--json"))
    assert data["would"] == "block" and data["score"] >= 50
    assert data["reasons"][0].startswith(("networks=", "model_listings="))
    unknown = subprocess.run([*cli_command(), "inspect", "gk_notanid", "--store",
                              f"sqlite:///{path}"], capture_output=True, text=True, timeout=60,
                             env=clean_env(), cwd=tmp_path)
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert "not a key id" in unknown.stderr


def test_the_flag_header_reaches_the_client_through_a_limits_responder() -> None:
    """A concurrency limit wraps the app in a Responder armed before the score ran: the
    score's header must reach it too."""
    policy = _policy("enforce", FLAG_THEN_BLOCK)
    policy["tenants"]["acme"] = {"limits": {"concurrency": 10}}
    run = Run(policy)
    answers = asyncio.run(run.fan_out(6))
    run.finish()
    assert [d.action for d in run.decisions][4:] == ["flag", "flag"]
    assert [h.get(b"x-gatekeeper-resale") for _, h in answers][4:] == [b"flag", b"flag"]
