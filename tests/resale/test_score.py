"""The score: each signal's points with its reason, largest first; graduated actions."""

from __future__ import annotations

from dataclasses import replace

from gatekeeper.clock import ManualClock
from gatekeeper.decision import ALLOW, BLOCK, FLAG, SUSPEND, THROTTLE
from gatekeeper.policy.resale import ResaleSettings, SignalRule
from gatekeeper.resale import Event, KeyState, action_for, observe, score

SETTINGS = ResaleSettings(mode="shadow")
T0 = 1_800_000_000.0


def test_rules_give_nothing_up_to_allow_then_weight_per_unit_up_to_cap() -> None:
    rule = SignalRule(allow=4, weight=5, cap=60)
    assert [rule.points(v) for v in (0, 4, 5, 10, 100)] == [0, 0, 5, 30, 60]


def test_fan_out_scores_with_its_reasons_largest_first() -> None:
    clock = ManualClock(T0)
    state = KeyState(T0)
    for i in range(40):
        observe(state, Event(clock.now(), "k", f"2001:db8:{i}::1", f"AS{64500 + i}",
                             ("DE", "FR", "BR", "JP")[i % 4], f"agent/{i % 7}"), SETTINGS)
        clock.advance(2)
    found = score(state, SETTINGS, clock.now())
    signals = [c.signal for c in found.contributions]
    assert signals[0] == "networks" and found.contributions[0].points == 60
    assert set(signals) == {"networks", "countries", "addresses", "user_agents"}
    assert found.total == sum(c.points for c in found.contributions) == 60 + 30 + 20 + 15
    assert found.reasons(2) == ["networks=24 (+60)", "countries=4 (+30)"]  # 24: the cap
    assert action_for(found.total, SETTINGS) == SUSPEND


def test_one_quiet_key_scores_zero() -> None:
    state = KeyState(T0)
    for i in range(50):
        observe(state, Event(T0 + i * 60, "k", "192.0.2.1", "AS64500", "DE", "sdk/1"),
                SETTINGS)
    assert score(state, SETTINGS, T0 + 3000).total == 0


def test_a_key_checker_scores_on_reconnaissance() -> None:
    state = KeyState(T0)
    events = [Event(T0 + i, "k", listing=True) for i in range(4)]
    events += [Event(T0 + 10 + i, "k", model=f"m{i}", tiny=True) for i in range(6)]
    events += [Event(T0 + 20 + i, "k", invalid=True) for i in range(4)]
    for event in events:
        observe(state, event, SETTINGS)
    found = score(state, SETTINGS, T0 + 30)
    assert {c.signal for c in found.contributions} == \
        {"model_listings", "models", "tiny_probes", "invalid"}
    assert found.total == 20 + 30 + 45 + 20


def test_actions_by_threshold_and_a_missing_threshold_is_skipped() -> None:
    assert [action_for(t, SETTINGS) for t in (0, 49.9, 50, 80, 119, 120, 500)] == \
        [ALLOW, ALLOW, FLAG, THROTTLE, THROTTLE, SUSPEND, SUSPEND]
    with_block = replace(SETTINGS, thresholds=(50.0, None, 90.0, None))
    assert [action_for(t, with_block) for t in (60, 85, 95, 500)] == [FLAG, FLAG, BLOCK, BLOCK]


def test_impossible_travel_counts_towards_a_new_place_only() -> None:
    from gatekeeper.geo.travel import Sighting

    eager = replace(SETTINGS, learn_requests=0, learn_seconds=0)
    frankfurt = Sighting("DE", 50.11, 8.68, T0)
    sao_paulo = Sighting("BR", -23.55, -46.63, T0)
    state = KeyState(T0)
    observe(state, Event(T0, "k", country="DE", place=frankfurt), eager)
    observe(state, Event(T0 + 300, "k", country="BR", place=sao_paulo), eager)
    found = score(state, eager, T0 + 301)
    assert found.contributions[0].signal == "impossible_travel" and found.total >= 60
    # a backend that has served both regions for days hops between them all day: not travel
    later = T0 + 2 * eager.long_window
    for i in range(10):
        here = ("DE", frankfurt) if i % 2 else ("BR", sao_paulo)
        observe(state, Event(later + i * 60, "k", country=here[0], place=here[1]), eager)
    assert "impossible_travel" not in {c.signal for c in
                                       score(state, eager, later + 600).contributions}
