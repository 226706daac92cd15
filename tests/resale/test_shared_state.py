"""What a process sends of its keys in a batch and how the fleet's counts read back enter the
score (``resale/shared.py``), without a store: the batch's contents, the lag, the fleet's
volume over the fleet's own baseline."""

from __future__ import annotations

from dataclasses import replace

from gatekeeper.policy.resale import ResaleSettings
from gatekeeper.resale import Event, ResaleTracker, score
from gatekeeper.resale.shared import absorb, collect
from gatekeeper.resale.state import RING

SETTINGS = replace(ResaleSettings(mode="shadow"), learn_requests=5, learn_seconds=60.0)
T0 = 1_800_000_000.0
SHORT = SETTINGS.short_window


def test_a_batch_holds_the_keys_used_since_the_last_one_with_their_new_values() -> None:
    tracker = ResaleTracker(100)
    tracker.observe(Event(T0, "k1", "192.0.2.1", "192.0.2.0/24"), SETTINGS)
    tracker.observe(Event(T0 + 1, "k2", "192.0.2.2", "192.0.2.0/24", user_agent="sdk/1"),
                    SETTINGS)
    tracker.observe(Event(T0 + 2, "k1", "192.0.2.1", "192.0.2.0/24"), SETTINGS)
    first = {signals.key_id: signals for _, signals in collect(tracker, T0)}
    assert set(first) == {"k1", "k2"}
    assert first["k1"].members[:4] == (("192.0.2.1",), ("192.0.2.0/24",), (), ())
    assert first["k1"].requests == 2 and first["k2"].requests == 1
    assert first["k1"].read == (True, True, False, False, False, False)
    assert first["k2"].read[3] and first["k2"].members[3] == ("sdk/1",)
    assert first["k1"].slot == SHORT / RING and first["k1"].slots == RING
    assert collect(tracker, T0 + 3) == []  # nothing used since: nothing sent

    tracker.observe(Event(T0 + 30, "k2", "198.51.100.7", "198.51.100.0/24",
                          user_agent="sdk/1"), SETTINGS)
    (_, again), = collect(tracker, T0 + 20)
    assert again.key_id == "k2" and again.requests == 1
    # the new address and network, and the agent it used again; not its old address
    assert again.members[:4] == (("198.51.100.7",), ("198.51.100.0/24",), (), ("sdk/1",))


def test_a_batch_is_bounded_and_the_rest_goes_in_the_next() -> None:
    tracker = ResaleTracker(100)
    for i in range(5):
        tracker.observe(Event(T0 + i, f"k{i}", "192.0.2.1"), SETTINGS)
    assert [s.key_id for _, s in collect(tracker, T0, limit=3)] == ["k4", "k3", "k2"]
    assert [s.key_id for _, s in collect(tracker, T0 + 10, limit=3)] == []  # k1, k0: older
    tracker.observe(Event(T0 + 20, "k0", "192.0.2.1"), SETTINGS)
    assert [s.key_id for _, s in collect(tracker, T0 + 10)] == ["k0"]


def test_the_fleets_distinct_counts_score_for_a_tenth_of_the_window() -> None:
    tracker = ResaleTracker(10)
    for i in range(3):
        tracker.observe(Event(T0 + i, "k", f"192.0.2.{i}", f"net{i}"), SETTINGS)
    state = tracker.get("k")
    assert state is not None
    assert score(state, SETTINGS, T0 + 5).total == 0  # three networks here: under allow
    collect(tracker, T0)
    absorb(state, (12, 10, 1, 1, 0, 0, 40), T0 + 5)
    assert state.cached is None  # the next request is scored again
    found = score(state, SETTINGS, T0 + 6)
    assert found.reasons(2) == ["networks=10 (+30)", "addresses=12 (+8)"]
    # not read again for more than a tenth of the window: this process's own counts only
    assert score(state, SETTINGS, T0 + 6 + SHORT / RING).total == 0


def test_a_fleet_surge_scores_volume_against_the_fleets_own_baseline() -> None:
    tracker = ResaleTracker(10)
    state = tracker.observe(Event(T0, "k", "192.0.2.1"), SETTINGS)
    ts = T0
    for _window in range(12):  # twelve windows at the fleet's usual 20 requests, 4 of them here
        for _ in range(4):
            ts += SHORT / 4
            tracker.observe(Event(ts, "k", "192.0.2.1"), SETTINGS)
        collect(tracker, ts)
        absorb(state, (1, 1, 0, 0, 0, 0, 20), ts)
    assert state.shared is not None and state.shared.fleet_baseline is not None
    assert abs(state.shared.fleet_baseline - 20) < 1
    assert score(state, SETTINGS, ts + 1).total == 0  # the usual pace: here and fleet-wide
    # another replica serves a thief 400 requests: this one's own traffic has not changed
    absorb(state, (1, 1, 0, 0, 0, 0, 420), ts + 2)
    found = score(state, SETTINGS, ts + 3)
    assert found.contributions[0].signal == "volume" and found.contributions[0].value == 21.0
