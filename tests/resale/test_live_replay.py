"""The same recorded requests through the live middleware (uvicorn on a real socket, a
ManualClock set to each request's time) and through ``gatekeeper replay`` (a subprocess)
give the same decisions and the same resale scores, request for request."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import httpx

from gatekeeper import Gatekeeper, ManualClock, SQLiteStore, key_admin
from gatekeeper.decision import Decision
from gatekeeper.policy.load import load_policy
from gatekeeper.resale.score import Score
from gatekeeper.resale.scorer import Scorer
from gatekeeper.types import Scope
from tests.conftest import PEPPER, Recorder
from tests.serving import serving
from tests.test_cli import clean_env, cli_command

T0 = 1_800_000_000.0
PEPPER_ENV = "GK_LIVE_REPLAY_PEPPER"
CHAT = {"model": "demo-echo", "messages": [{"role": "user", "content": "hi"}]}


class RecordingScorer(Scorer):
    """The live stage's own scorer, remembering the score each request was judged by."""

    __slots__ = ("judged",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.judged: list[float] = []

    def judge(self, decision: Decision, now: float) -> tuple[Decision, Score, str]:
        acted, before, would = super().judge(decision, now)
        self.judged.append(round(before.total, 1))
        return acted, before, would


def _traffic(key: str) -> list[dict[str, Any]]:
    """A quiet hour from one office, then a key checker's sweep from 24 networks with
    rotating agents, then the office again: allowed, flagged, throttled, blocked."""
    rows: list[dict[str, Any]] = []
    auth = {"authorization": f"Bearer {key}"}
    for i in range(24):
        rows.append({"ts": T0 + i * 150, "method": "POST", "path": "/v1/chat/completions",
                     "headers": {**auth, "x-forwarded-for": "192.0.2.10",
                                 "user-agent": "sdk/1"}, "body": CHAT})
    start = T0 + 24 * 150
    for i in range(24):
        rows.append({"ts": start + i * 3, "method": "GET", "path": "/v1/models",
                     "headers": {**auth, "x-forwarded-for": f"198.18.{i}.7",
                                 "user-agent": f"checker/{i % 6}"}})
    for i in range(4):
        rows.append({"ts": start + 100 + i * 10, "method": "POST",
                     "path": "/v1/chat/completions",
                     "headers": {**auth, "x-forwarded-for": "192.0.2.10",
                                 "user-agent": "sdk/1"}, "body": CHAT})
    for row in rows:
        row["client_ip"] = "127.0.0.1"
    return rows


def test_live_and_replay_give_the_same_decisions_and_scores(tmp_path: Path) -> None:
    policy_path = tmp_path / "policy.json"
    policy_path.write_text(json.dumps({
        "routes": {"protect": ["/v1/*"]},
        "store": f"sqlite:///{tmp_path / 'keys.db'}",
        "keys": {"pepper_env": PEPPER_ENV},
        "client_address": {"trusted_proxies": ["127.0.0.0/8"]},
        "tenants": {"acme": {}},
        "resale": {"mode": "enforce",
                   "thresholds": {"flag": 20, "throttle": 45, "block": 80, "suspend": None}},
    }))
    policy = load_policy(policy_path)
    store = SQLiteStore(tmp_path / "keys.db")
    key, _ = asyncio.run(key_admin.create_key(store, PEPPER, policy, "acme", T0 - 60))
    asyncio.run(store.close())

    clock = ManualClock(T0)
    live: list[Decision] = []

    def observe(scope: Scope, decision: Decision, now: float) -> None:
        live.append(decision)

    gk = Gatekeeper(Recorder(), policy, store=SQLiteStore(tmp_path / "keys.db"), pepper=PEPPER,
                    clock=clock, observer=observe)
    stage = gk.runtime.resale
    assert stage is not None
    scorer = stage.scorer = RecordingScorer(policy, tracker=gk.resale.tracker,
                                            suspended=gk.resale.suspended)
    rows = _traffic(key)
    with serving(gk) as base, httpx.Client(base_url=base) as client:
        for row in rows:
            clock.set(row["ts"])
            client.request(row["method"], row["path"], headers=row["headers"],
                           json=row.get("body"))
    assert len(live) == len(rows) == len(scorer.judged)
    actions = [d.action for d in live]
    assert {"allow", "flag", "throttle", "block"} <= set(actions), actions

    traffic = tmp_path / "traffic.jsonl"
    traffic.write_text("".join(json.dumps(row) + "\n" for row in rows))
    done = subprocess.run([*cli_command(), "replay", str(traffic), "--policy", str(policy_path),
                           "--out", str(tmp_path / "decisions.jsonl"), "--quiet"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=clean_env(**{PEPPER_ENV: PEPPER.decode()}))
    assert done.returncode == 0, done.stderr
    replayed = [json.loads(line) for line in
                (tmp_path / "decisions.jsonl").read_text().splitlines()]
    assert [(d["action"], d["status"], d["reason"], d["score"]) for d in replayed] == \
        [(d.action, d.reason.status, d.reason.code, s)
         for d, s in zip(live, scorer.judged, strict=True)]
