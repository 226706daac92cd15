"""The resale score: a pure function of a key's state, its settings and the time.

Each signal yields a value (what was counted) and its rule turns the value into points
(``SignalRule.points``: nothing up to ``allow``, ``weight`` per unit above, at most ``cap``).
The score is the sum; its contributions, largest first, are its explanation ("networks=12
(+40)"). ``action_for`` maps the total onto the graduated actions. Values:

- ``addresses``, ``networks``, ``countries``, ``user_agents``, ``models``: distinct values in
  the short window (a declared network counts as one), the fleet's when the store shares them
  and they are more (``shared.py``);
- ``end_users``: distinct ``user`` ids per client address in the short window (a declared
  NAT egress does not count them);
- ``volume``: requests in the short window over the key's baseline (its average per short
  window while active, at least ``MIN_BASELINE``), or the fleet's over the fleet's if more;
  ``concurrency``: requests in flight over the baseline of its peaks (at least
  ``MIN_PEAK``); both only once the key has learned;
- ``duty_cycle``: hours of the last 24 with any use (a person sleeps; a resold key does not);
- ``new_networks``, ``new_countries``, ``new_user_agents``: values first used in the long
  window by a key that had learned, and still in use in the short window (never a declared
  network or country): a thief's network keeps counting while the thief keeps using it;
- ``dormant_wake``: requests in the short window after waking from ``dormant_after`` idle;
- ``model_listings``, ``tiny_probes``, ``invalid``: such requests in the short window;
- ``impossible_travel``: hops in the short window faster than ``travel.max_kmh``.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from gatekeeper.decision import ALLOW, BLOCK, FLAG, SUSPEND, THROTTLE
from gatekeeper.policy.resale import ResaleSettings
from gatekeeper.resale.shared import fleet
from gatekeeper.resale.state import (
    ADDRESS,
    DIMENSIONS,
    END_USER,
    NEW_SIGNALS,
    KeyState,
    active_hours,
    recent_requests,
    settle,
)

MIN_BASELINE: Final = 5.0
MIN_PEAK: Final = 2.0
_ACTIONS = (FLAG, THROTTLE, BLOCK, SUSPEND)


class Contribution(NamedTuple):
    signal: str
    value: float
    points: float

    def __str__(self) -> str:
        value = f"{self.value:.1f}" if self.value != int(self.value) else f"{self.value:.0f}"
        return f"{self.signal}={value} (+{self.points:.0f})"


class Score(NamedTuple):
    total: float
    contributions: tuple[Contribution, ...] = ()
    """Signals that scored, largest first."""

    def reasons(self, n: int = 3) -> list[str]:
        """The top ``n`` contributions as text: what an audit line and a report show."""
        return [str(c) for c in self.contributions[:n]]


ZERO = Score(0.0)


def signal_values(state: KeyState, settings: ResaleSettings, now: float) -> dict[str, float]:
    """What each signal counted at ``now``: the score's inputs, before any weight."""
    settle(state)
    short = settings.short_window
    since = now - short
    values: dict[str, float] = {}
    shared = None if state.shared is None else fleet(state, now, short)
    for dim, name in enumerate(DIMENSIONS):
        values[name] = _recent(state.seen[dim], since)
        if shared is not None and shared[dim] > values[name]:
            values[name] = float(shared[dim])
    values["end_users"] = values.pop(DIMENSIONS[END_USER]) / max(1.0, values[DIMENSIONS[ADDRESS]])
    learned = state.learned(settings, now)
    recent = recent_requests(state, now, short)
    baseline = max(state.baseline or 0.0, MIN_BASELINE)
    values["volume"] = recent / baseline if learned and state.baseline is not None else 0.0
    if learned and shared is not None:
        fleet_baseline = state.shared.fleet_baseline  # type: ignore[union-attr]  # fleet() said
        if fleet_baseline is not None:
            values["volume"] = max(values["volume"],
                                   shared[-1] / max(fleet_baseline, MIN_BASELINE))
    in_flight = sum(1 for end in state.in_flight if end > now)
    values["concurrency"] = in_flight / max(state.peak_baseline or 0.0, MIN_PEAK) \
        if learned and state.peak_baseline is not None else 0.0
    values["duty_cycle"] = float(active_hours(state, now))
    for name in NEW_SIGNALS.values():
        values[name] = 0.0
    first_since = now - settings.long_window
    for dim, value, at in state.news or ():
        if at >= first_since and state.seen[dim].get(value, first_since) >= since:
            values[NEW_SIGNALS[dim]] += 1
    values["dormant_wake"] = float(state.woke_count) \
        if state.woke_at is not None and state.woke_at >= since else 0.0
    values["model_listings"] = _since(state.listings, since)
    values["tiny_probes"] = _since(state.tiny, since)
    values["invalid"] = _since(state.invalid, since)
    values["impossible_travel"] = _since(state.travel, since)
    return values


def score(state: KeyState, settings: ResaleSettings, now: float) -> Score:
    """The key's score at ``now`` with every contribution that scored, largest first."""
    rules = settings.signals
    found = []
    total = 0.0
    for name, value in signal_values(state, settings, now).items():
        rule = rules[name]
        if value > rule.allow:  # SignalRule.points, inlined: most signals are below allow
            points = min(rule.cap, (value - rule.allow) * rule.weight)
            if points > 0:
                found.append(Contribution(name, value, points))
                total += points
    found.sort(key=lambda c: -c.points)
    return Score(total, tuple(found))


def action_for(total: float, settings: ResaleSettings) -> str:
    """The highest action whose threshold ``total`` reaches; ``allow`` below them all."""
    action = ALLOW
    for name, threshold in zip(_ACTIONS, settings.thresholds, strict=True):
        if threshold is not None and total >= threshold:
            action = name
    return action


def _recent(seen: dict[str, float], since: float) -> float:
    """Values last seen at or after ``since``: a suffix of the map, which ``observe`` keeps
    in order of last use, so only the recent ones are looked at."""
    n = 0
    for at in reversed(seen.values()):
        if at < since:
            break
        n += 1
    return float(n)


def _since(times: list[float] | None, since: float) -> float:
    return 0.0 if times is None else float(sum(1 for t in times if t >= since))
