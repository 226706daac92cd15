"""The circuit breaker's rule, on a clock the test moves: opens after three failures in a row,
lets calls through again after the cooldown, and waits longer after each failed round of
trials, once per round however many calls were let through together."""

from __future__ import annotations

from gatekeeper.breaker import COOLDOWN, MAX_COOLDOWN, THRESHOLD, Breaker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_the_threshold_and_a_successful_trial_closes_it() -> None:
    clock = Clock()
    breaker = Breaker(clock)
    for _ in range(THRESHOLD - 1):
        breaker.failure()
    assert breaker.allow() and not breaker.open
    breaker.failure()
    assert breaker.open and not breaker.allow()
    clock.now += COOLDOWN
    assert breaker.allow()  # the trial
    breaker.success()
    assert not breaker.open and breaker.allow()


def test_failures_of_calls_already_under_way_do_not_lengthen_the_cooldown() -> None:
    """Eight requests in flight when Redis dies fail together: the breaker opens for one
    cooldown, not for the maximum (which would keep a recovered store unused for seconds)."""
    clock = Clock()
    breaker = Breaker(clock)
    for _ in range(8):
        breaker.failure()
    clock.now += COOLDOWN
    assert breaker.allow()


def test_a_failed_round_of_trials_doubles_the_cooldown_once() -> None:
    clock = Clock()
    breaker = Breaker(clock)
    for _ in range(THRESHOLD):
        breaker.failure()
    cooldown = COOLDOWN
    for _ in range(6):
        clock.now += cooldown - 0.01
        assert not breaker.allow()
        clock.now += 0.01
        assert breaker.allow()
        for _ in range(8):  # eight trials let through together, all failing
            breaker.failure()
        cooldown = min(cooldown * 2, MAX_COOLDOWN)
    assert cooldown == MAX_COOLDOWN
