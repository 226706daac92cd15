"""Per-key state: O(1) updates over sliding windows, and a memory bound whatever the keys."""

from __future__ import annotations

import time

from gatekeeper.clock import ManualClock
from gatekeeper.policy.resale import ResaleSettings
from gatekeeper.resale import Event, KeyState, ResaleTracker, observe, signal_values
from gatekeeper.resale.state import DISTINCT_CAP, recent_requests

SETTINGS = ResaleSettings(mode="shadow")
T0 = 1_800_000_000.0


def _learned(clock: ManualClock, key: str = "k") -> KeyState:
    """A key with a day of quiet history from one place: one request every 10 minutes."""
    state = KeyState(clock.now())
    for _ in range(144):
        observe(state, Event(clock.now(), key, "192.0.2.1", "AS64500", "DE", "sdk/1"),
                SETTINGS)
        clock.advance(600)
    return state


def test_distinct_values_count_only_inside_the_short_window() -> None:
    clock = ManualClock(T0)
    state = KeyState(T0)
    for i in range(20):
        observe(state, Event(clock.now(), "k", f"2001:db8:{i}::1", f"AS{64500 + i}"), SETTINGS)
        clock.advance(10)
    values = signal_values(state, SETTINGS, clock.now())
    assert values["addresses"] == 20 and values["networks"] == 20
    clock.advance(600)
    values = signal_values(state, SETTINGS, clock.now())
    assert values["addresses"] == 0 and values["networks"] == 0


def test_distinct_maps_are_capped_most_recent_kept() -> None:
    state = KeyState(T0)
    for i in range(DISTINCT_CAP * 3):
        observe(state, Event(T0 + i, "k", f"198.51.100.{i % 250}", f"n{i}"), SETTINGS)
    assert len(state.seen[1]) == DISTINCT_CAP
    assert f"n{DISTINCT_CAP * 3 - 1}" in state.seen[1] and "n0" not in state.seen[1]


def test_the_request_ring_slides_and_forgets() -> None:
    state = KeyState(T0)
    for i in range(100):
        observe(state, Event(T0 + i * 3, "k"), SETTINGS)  # 100 requests over 5 minutes
    assert recent_requests(state, T0 + 300, 600) == 100
    # at +780 the window holds the slots from +240 on: the requests at +240..+297
    assert recent_requests(state, T0 + 780, 600) == 20
    assert recent_requests(state, T0 + 2000, 600) == 0


def test_first_use_from_a_new_network_counts_only_once_the_key_has_learned() -> None:
    fresh = KeyState(T0)
    for i in range(5):
        observe(fresh, Event(T0 + i, "k", None, f"AS{64500 + i}", "BR"), SETTINGS)
    assert signal_values(fresh, SETTINGS, T0 + 5)["new_networks"] == 0
    clock = ManualClock(T0)
    state = _learned(clock)
    observe(state, Event(clock.now(), "k", "203.0.113.9", "AS64511", "BR", "curl/8"), SETTINGS)
    values = signal_values(state, SETTINGS, clock.now())
    assert (values["new_networks"], values["new_countries"], values["new_user_agents"]) == \
        (1, 1, 1)
    clock.advance(601)
    assert signal_values(state, SETTINGS, clock.now())["new_countries"] == 0


def test_baseline_volume_and_duty_cycle() -> None:
    clock = ManualClock(T0)
    state = _learned(clock)
    assert state.baseline is not None and 0.9 <= state.baseline <= 1.1
    assert signal_values(state, SETTINGS, clock.now())["duty_cycle"] >= 23
    for _ in range(200):
        observe(state, Event(clock.now(), "k", "192.0.2.1", "AS64500", "DE"), SETTINGS)
        clock.advance(1)
    assert signal_values(state, SETTINGS, clock.now())["volume"] >= 200 / 5


def test_concurrency_counts_requests_in_flight() -> None:
    clock = ManualClock(T0)
    state = _learned(clock)
    for _ in range(40):
        observe(state, Event(clock.now(), "k", duration=30.0), SETTINGS)
        clock.advance(0.1)
    assert signal_values(state, SETTINGS, clock.now())["concurrency"] == 40 / 2
    assert signal_values(state, SETTINGS, clock.now() + 31)["concurrency"] == 0


def test_a_dormant_key_waking_counts_its_burst() -> None:
    state = KeyState(T0)
    observe(state, Event(T0, "k"), SETTINGS)
    later = T0 + 8 * 86_400
    for i in range(12):
        observe(state, Event(later + i, "k"), SETTINGS)
    assert signal_values(state, SETTINGS, later + 12)["dormant_wake"] == 12
    assert signal_values(state, SETTINGS, later + 700)["dormant_wake"] == 0


def test_a_million_distinct_keys_stay_under_the_bound_fast() -> None:
    tracker = ResaleTracker(max_keys=50_000)
    started = time.perf_counter()
    for i in range(1_000_000):
        tracker.observe(Event(T0 + i * 0.001, f"key{i}"), SETTINGS)
    elapsed = time.perf_counter() - started
    assert len(tracker) == 50_000
    assert tracker.get("key0") is None and tracker.get("key999999") is not None
    assert elapsed < 60, elapsed


def test_bytes_per_key_stay_under_the_stated_bound() -> None:
    import tracemalloc

    tracemalloc.start()
    try:
        tracker = ResaleTracker(max_keys=2_000)
        for i in range(2_000):
            tracker.observe(Event(T0 + i, f"key{i:08d}", "192.0.2.1", "AS64500", "DE",
                                  "sdk/1", None, "gpt-4o-mini"), SETTINGS)
        typical = tracemalloc.get_traced_memory()[0] / 2_000
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        full = KeyState(T0)
        for i in range(2_000):  # every map, list and the in-flight heap at its cap
            observe(full, Event(T0 + i, "k", f"2001:db8:{i:x}::1", f"AS{i}", f"C{i}",
                                f"ua{i}", f"user{i}", f"m{i}", True, True, True, 900.0),
                    SETTINGS)
        worst = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert typical < 2_500, typical
    assert worst < 40_000, worst
