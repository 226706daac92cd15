"""``act``: the score changes only allowed decisions under enforce, in proportion."""

from __future__ import annotations

from dataclasses import replace

from gatekeeper import reasons
from gatekeeper.decision import ALLOW, BLOCK, FLAG, SUSPEND, THROTTLE, Decision
from gatekeeper.policy.resale import ResaleSettings
from gatekeeper.resale.act import act
from gatekeeper.resale.score import Contribution, Score

ENFORCE = ResaleSettings(mode="enforce", thresholds=(50.0, 80.0, 100.0, 120.0))
ALLOWED = Decision(reasons.OK, None, "k", "acme", action=ALLOW)


def _score(total: float) -> Score:
    return Score(total, (Contribution("networks", 12, total),))


def test_graduated_actions_under_enforce() -> None:
    found = [act(ALLOWED, _score(t), ENFORCE) for t in (10, 60, 90, 110, 130)]
    assert [d.action for d in found] == [ALLOW, FLAG, THROTTLE, BLOCK, SUSPEND]
    assert [d.reason.code for d in found] == ["ok", "ok", "ok", "resale_suspected",
                                              "key_suspended"]
    assert found[1].signals == ("resale:networks",) and found[1].allowed
    assert not found[3].allowed and found[3].reason.status == 403


def test_shadow_refusals_and_a_held_suspension() -> None:
    shadow = replace(ENFORCE, mode="shadow")
    assert act(ALLOWED, _score(500), shadow) is ALLOWED
    refused = Decision(reasons.NETWORK_NOT_ALLOWED, None, "k", "acme")
    assert act(refused, _score(500), ENFORCE) is refused
    assert act(ALLOWED, _score(0), ENFORCE, suspended=True).action == SUSPEND
    flagged = ALLOWED._replace(action=FLAG, signals=("country_unknown",))
    assert act(flagged, _score(60), ENFORCE).signals == ("country_unknown", "resale:networks")
    assert act(ALLOWED, _score(0), ENFORCE) is ALLOWED
    assert BLOCK not in {act(ALLOWED, _score(t), replace(ENFORCE, thresholds=(
        50.0, 80.0, None, 120.0))).action for t in range(0, 200, 5)}
