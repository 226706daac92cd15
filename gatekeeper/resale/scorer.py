"""The score for one process: every key's state, the keys it suspended, each tenant's
settings. What the request path holds once and calls twice per request of a known key:

    acted, before, would = scorer.judge(decision, now)     # from the state before it
    ... the request runs (or is refused) ...
    scorer.count(event_for(scorer.settings(decision.tenant), ...))

``replay_scored`` drives it the same way.

The score is not recomputed on every request: a key's last score is reused until something
it counts changes (a new address, network, country, agent, user or model, a probe, an
invalid request, travel, a new baseline, a new hour: ``observe`` drops it), until
``RESCORE_EVERY`` requests have been counted since, or for a tenth of the short window
(``RING`` slots), whichever comes first. So the score lags by at most ``RESCORE_EVERY - 1``
requests in volume and concurrency and by a tenth of the short window in values ageing out,
never in a new value or probe. Replay and the live path use this same object, so both see the
same lag and give the same scores.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Final

from mypy_extensions import mypyc_attr

from gatekeeper import reasons
from gatekeeper.decision import ALLOW, SUSPEND, THROTTLE, Decision
from gatekeeper.policy.model import Policy
from gatekeeper.policy.resale import OFF, SHADOW, ResaleSettings
from gatekeeper.resale.act import act
from gatekeeper.resale.event import Event
from gatekeeper.resale.score import MIN_BASELINE, ZERO, Score, action_for, score
from gatekeeper.resale.state import RING, KeyState, ResaleTracker

RESCORE_EVERY: Final = 32
"""Requests after which a key's score is computed again even if nothing new was seen."""


@mypyc_attr(allow_interpreted_subclasses=True)  # a recording scorer, in tests too
class Scorer:
    __slots__ = ("_settings", "changed", "force_shadow", "policy", "suspend_for", "suspended",
                 "tracker")

    def __init__(self, policy: Policy, force_shadow: bool = False,
                 tracker: ResaleTracker | None = None,
                 suspended: dict[str, float] | None = None,
                 suspend_for: float = math.inf,
                 changed: dict[str, str | None] | None = None) -> None:
        """``force_shadow``: score where the policy has the score off (replay reports what
        it would do). ``tracker`` and ``suspended``: the state of an earlier scorer to keep
        (a policy reload keeps every key's history). ``suspend_for``: how long this process
        holds a suspension itself (for good by default; the live path shortens it once the key
        store holds the status, which governs from then on: an allowed request then means
        ``keys reinstate`` lifted it, and the key's history is forgotten so it starts again
        clean)."""
        self.policy = policy
        self.force_shadow = force_shadow
        self.tracker = ResaleTracker(policy.resale.max_keys) if tracker is None else tracker
        self.suspended: dict[str, float] = {} if suspended is None else suspended
        """Key id -> until when this process refuses it as suspended."""
        self.suspend_for = suspend_for
        self.changed = changed
        """When given: key id -> tenant of every key whose score was computed again (the
        live path writes their snapshots in batches, ``resale/snapshot.py``)."""
        self._settings: dict[str | None, ResaleSettings] = {}

    def settings(self, tenant: str | None) -> ResaleSettings:
        found = self._settings.get(tenant)
        if found is None:
            found = self.policy.resale_for(tenant)
            if found.mode == OFF and self.force_shadow:
                found = replace(found, mode=SHADOW)
            self._settings[tenant] = found
        return found

    def judge(self, decision: Decision, now: float) -> tuple[Decision, Score, str]:
        """(the decision after the score, the score it came from, what the score asks for)
        for a request of a known key; unknown keys and a score that is off pass unchanged."""
        key_id = decision.key_id
        if key_id is None or decision.principal is None:
            return decision, ZERO, ALLOW
        settings = self._settings.get(decision.tenant) or self.settings(decision.tenant)
        if settings.mode == OFF:
            return decision, ZERO, ALLOW
        state = self.tracker.keys.get(key_id)
        suspended = self.suspended.get(key_id)
        if suspended is not None and now >= suspended and decision.allowed:
            del self.suspended[key_id]  # allowed by the store again: reinstated
            del self.tracker.keys[key_id]
            state = suspended = None
        if state is None:
            before, would = ZERO, ALLOW
        else:
            if state.cached is None or state.unscored >= RESCORE_EVERY or \
                    not state.cached_until - settings.short_window / RING <= now < \
                    state.cached_until:
                _rescore(state, settings, now)
                if self.changed is not None:
                    self.changed[key_id] = decision.tenant
            before, would = state.cached or ZERO, state.would
        if would == ALLOW and suspended is None:
            return decision, before, would
        acted = act(decision, before, settings, suspended is not None)
        if acted.action == SUSPEND:
            if suspended is None:
                self.suspended[key_id] = now + self.suspend_for
        elif acted.action == THROTTLE and state is not None:
            acted = throttled(acted, state, settings, now)
        return acted, before, would

    def count(self, event: Event, tenant: str | None) -> None:
        """Count one request of a known key (allowed or refused) into its state."""
        settings = self.settings(tenant)
        if settings.mode != OFF:
            self.tracker.observe(event, settings)


def throttled(decision: Decision, state: KeyState, settings: ResaleSettings,
              now: float) -> Decision:
    """A throttled key passes at its own baseline pace (times ``resale.throttle_factor``,
    requests per short window), with a tenth of the window's worth as burst (GCRA); the rest
    is refused with ``resale_throttled``: its owner's normal use goes on, a resold flood
    does not."""
    rate = max(state.baseline or 0.0, MIN_BASELINE) * settings.throttle_factor
    interval = settings.short_window / rate
    burst = settings.short_window / RING
    due = max(state.throttle_at, now)
    if due - now > burst:
        wait = math.ceil(due - now - burst) or 1
        return Decision(reasons.RESALE_THROTTLED, decision.principal, decision.key_id,
                        decision.tenant, "resale score: throttled", THROTTLE,
                        ((b"retry-after", str(wait).encode()),), decision.signals)
    state.throttle_at = due + interval
    return decision


def _rescore(state: KeyState, settings: ResaleSettings, now: float) -> None:
    found = state.cached = state.scored = score(state, settings, now)
    state.would = would = action_for(found.total, settings)
    if would == ALLOW:
        state.announced = ALLOW  # a later rise is announced again
    state.cached_until = now + settings.short_window / RING
    state.scored_at = now
    state.unscored = 0
