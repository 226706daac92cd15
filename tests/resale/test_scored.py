"""Replay with the score: one request of lag, graduated actions under enforce, and shadow
mode proven to score and report identically while refusing nothing."""

from __future__ import annotations

import asyncio
from typing import Any

from gatekeeper import MemoryStore, build_key, compile_policy, key_admin
from gatekeeper.decision import ALLOW, FLAG, SUSPEND, Decision
from gatekeeper.geo.location import Location
from gatekeeper.networks import IPAddr
from gatekeeper.replay import RequestRecord
from gatekeeper.resale.scored import Scored, replay_scored
from tests.conftest import PEPPER

T0 = 1_800_000_000.0


def _policy(mode: str) -> dict[str, Any]:
    return {"routes": {"protect": ["/v1/*"]}, "tenants": {"acme": {}},
            "resale": {"mode": mode, "thresholds": {"flag": 20, "throttle": 50,
                                                     "suspend": 75}}}


def _where(addr: IPAddr) -> Location:
    """Every address its own network, all in Germany (only fan-out differs)."""
    return Location("DE", network=f"net-{addr.text}")


def _records(key: str) -> list[RequestRecord]:
    """A quiet key, then the same key from 40 networks in 40 seconds, then a forged key."""
    auth = {"authorization": f"Bearer {key}"}
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    rows = [{"ts": T0 + i * 60, "client_ip": "192.0.2.1", "method": "POST",
             "path": "/v1/chat/completions", "headers": auth, "body": body} for i in range(5)]
    rows += [{"ts": T0 + 600 + i, "client_ip": f"198.51.100.{i + 1}", "method": "POST",
              "path": "/v1/chat/completions", "headers": auth, "body": body}
             for i in range(40)]
    forged = build_key("ZZZZZZZZZZZZ", "f" * 32)
    rows.append({"ts": T0 + 700, "client_ip": "203.0.113.1", "method": "GET",
                 "path": "/v1/models", "headers": {"authorization": f"Bearer {forged}"}})
    return [RequestRecord.from_dict(row) for row in rows]


def _run(mode: str) -> list[Scored]:
    async def main() -> list[Scored]:
        policy = compile_policy(_policy(mode))
        store = MemoryStore()
        key, _ = await key_admin.create_key(store, PEPPER, policy, "acme", T0 - 60)
        return [s async for s in replay_scored(_records(key), policy, store, PEPPER,
                                               locate=_where)]

    return asyncio.run(main())


def test_enforce_acts_one_request_late_and_suspension_holds() -> None:
    results = _run("enforce")
    fan_out = results[5:45]
    assert [s.action for s in results[:5]] == [ALLOW] * 5
    # the score before the first new network is zero: that request is never caught
    assert fan_out[0].score.total == 0 and fan_out[0].action == ALLOW
    actions = [s.action for s in fan_out]
    first_flag, first_suspend = actions.index(FLAG), actions.index(SUSPEND)
    assert 0 < first_flag < first_suspend
    assert set(actions[first_suspend:]) == {SUSPEND}
    assert all(s.status == 401 and s.reason == "key_suspended"
               for s in fan_out[first_suspend:])
    assert fan_out[first_flag].score.contributions[0].signal in ("networks", "addresses")
    forged = results[-1]  # names no known key: refused by the pipeline, feeds nothing
    assert forged.reason == "key_unknown" and forged.decision.key_id == "ZZZZZZZZZZZZ"
    assert forged.score.total == 0 and forged.would == ALLOW


def test_shadow_scores_identically_and_refuses_nothing() -> None:
    enforce, shadow = _run("enforce"), _run("shadow")
    assert [s.score for s in shadow] == [s.score for s in enforce]
    assert [s.would for s in shadow] == [s.would for s in enforce]
    assert SUSPEND in {s.would for s in shadow}
    known = shadow[:-1]
    assert {s.action for s in known} == {ALLOW} and {s.status for s in known} == {200}


def test_a_scorer_whose_policy_has_no_resale_section_costs_nothing() -> None:
    from gatekeeper import CredentialKind, Principal, reasons
    from gatekeeper.resale import Event
    from gatekeeper.resale.score import ZERO
    from gatekeeper.resale.scorer import Scorer

    policy = compile_policy({"tenants": {"acme": {}}})
    principal = Principal(CredentialKind.API_KEY, "k1", "acme")
    allowed = Decision(reasons.OK, principal, "k1", "acme", action=ALLOW)
    off = Scorer(policy)
    off.count(Event(T0, "k1"), "acme")
    assert off.judge(allowed, T0) == (allowed, ZERO, ALLOW) and len(off.tracker) == 0
    shadow = Scorer(policy, force_shadow=True)
    shadow.count(Event(T0, "k1"), "acme")
    assert len(shadow.tracker) == 1 and shadow.judge(allowed, T0)[0] is allowed
