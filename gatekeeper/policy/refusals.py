"""The ``refusals`` section: what a refused client is told.

``conceal: true`` answers every refusal that tells a key checker something about a stolen
key (revoked, suspended, expired, bound to other networks or countries, seen travelling
impossibly, of a disabled tenant) exactly as an unknown key is answered, so live keys cannot
be told from dead ones. The audit line and the metrics keep the real reason: only the wire
answer changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from gatekeeper import reasons
from gatekeeper.policy.fields import Fields
from gatekeeper.reasons import Reason

CONCEALED: Mapping[Reason, Reason] = MappingProxyType({
    reasons.KEY_REVOKED: reasons.KEY_UNKNOWN,
    reasons.KEY_SUSPENDED: reasons.KEY_UNKNOWN,
    reasons.KEY_EXPIRED: reasons.KEY_UNKNOWN,
    reasons.TENANT_UNKNOWN: reasons.KEY_UNKNOWN,
    reasons.TENANT_DISABLED: reasons.KEY_UNKNOWN,
    reasons.NETWORK_NOT_ALLOWED: reasons.KEY_UNKNOWN,
    reasons.COUNTRY_NOT_ALLOWED: reasons.KEY_UNKNOWN,
    reasons.IMPOSSIBLE_TRAVEL: reasons.KEY_UNKNOWN,
    reasons.TOKEN_EXPIRED: reasons.TOKEN_INVALID,
})
"""Refusal -> what the client is told instead, under ``refusals.conceal``."""


def load_refusals(fields: Fields) -> Mapping[Reason, Reason]:
    """The wire answer per reason: empty (every reason answers as itself) unless concealed."""
    conceal = fields.get("conceal", bool, False)
    fields.finish()
    return CONCEALED if conceal else MappingProxyType({})
