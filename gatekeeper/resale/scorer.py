"""The score for one process: every key's state, the keys it suspended, each tenant's
settings. What the request path holds once and calls twice per request of a known key:

    acted, before, would = scorer.judge(decision, now)     # from the state before it
    ... the request runs (or is refused) ...
    scorer.count(event_for(scorer.settings(decision.tenant), ...))

``replay_scored`` drives it the same way.
"""

from __future__ import annotations

from dataclasses import replace

from gatekeeper.decision import ALLOW, SUSPEND, Decision
from gatekeeper.policy.model import Policy
from gatekeeper.policy.resale import OFF, SHADOW, ResaleSettings
from gatekeeper.resale.act import act
from gatekeeper.resale.event import Event
from gatekeeper.resale.score import ZERO, Score, action_for, score
from gatekeeper.resale.state import ResaleTracker


class Scorer:
    __slots__ = ("_settings", "force_shadow", "policy", "suspended", "tracker")

    def __init__(self, policy: Policy, force_shadow: bool = False) -> None:
        """``force_shadow``: score where the policy has the score off (replay reports what
        it would do)."""
        self.policy = policy
        self.force_shadow = force_shadow
        self.tracker = ResaleTracker(policy.resale.max_keys)
        self.suspended: set[str] = set()
        """Keys this process suspended; the request path also stores the status."""
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
        settings = self.settings(decision.tenant)
        if settings.mode == OFF:
            return decision, ZERO, ALLOW
        state = self.tracker.get(key_id)
        before = ZERO if state is None else score(state, settings, now)
        acted = act(decision, before, settings, key_id in self.suspended)
        if acted.action == SUSPEND:
            self.suspended.add(key_id)
        return acted, before, action_for(before.total, settings)

    def count(self, event: Event, tenant: str | None) -> None:
        """Count one request of a known key (allowed or refused) into its state."""
        settings = self.settings(tenant)
        if settings.mode != OFF:
            self.tracker.observe(event, settings)
