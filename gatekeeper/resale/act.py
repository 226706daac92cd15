"""What the score does to a decision: a pure function the hot path and replay both call.

Only an allowed decision of a key whose settings say ``enforce`` changes: ``flag`` lets it
through marked, ``throttle`` lets it through marked (the tighter limits are the limits
stage's to apply), ``block`` refuses it with ``resale_suspected``, ``suspend`` refuses it
with ``key_suspended`` (the caller stores the status, so every replica refuses the key until
``gatekeeper keys reinstate``). Refusals stay refusals; ``shadow`` and ``off`` change
nothing. The score's top signals travel in ``Decision.signals`` (``resale:networks``).
"""

from __future__ import annotations

from gatekeeper import reasons
from gatekeeper.decision import ALLOW, BLOCK, FLAG, SUSPEND, THROTTLE, Decision
from gatekeeper.policy.resale import ResaleSettings
from gatekeeper.resale.score import Score, action_for

_RANK = {ALLOW: 0, FLAG: 1, THROTTLE: 2, BLOCK: 3, SUSPEND: 4}
SIGNAL_PREFIX = "resale:"


def act(decision: Decision, found: Score, settings: ResaleSettings,
        suspended: bool = False) -> Decision:
    """``decision`` after the key's score ``found`` (from the state before this request);
    ``suspended``: the key was suspended by an earlier request (held by the caller)."""
    if not decision.allowed or not settings.acts:
        return decision
    would = SUSPEND if suspended else action_for(found.total, settings)
    if would == ALLOW:
        return decision
    signals = (*decision.signals,
               *(SIGNAL_PREFIX + c.signal for c in found.contributions[:3]))
    if would == SUSPEND:
        return Decision(reasons.KEY_SUSPENDED, decision.principal, decision.key_id,
                        decision.tenant, "resale score", SUSPEND, signals=signals)
    if would == BLOCK:
        return Decision(reasons.RESALE_SUSPECTED, decision.principal, decision.key_id,
                        decision.tenant, "resale score", BLOCK, signals=signals)
    action = would if _RANK[would] > _RANK[decision.action] else decision.action
    return decision._replace(action=action, signals=signals)
