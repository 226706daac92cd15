"""The decision: a plain function of (request facts, authentication result, policy, now).

No I/O, no clock, no globals: the middleware, ``replay`` and the tests all call ``decide``
with the same inputs and get the same answer. The binding reasons are decided here, in order.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from gatekeeper import reasons
from gatekeeper.facts import RequestFacts
from gatekeeper.policy.model import Policy
from gatekeeper.principal import CredentialKind, KeyStatus, Principal
from gatekeeper.reasons import OK, Reason, Refusal

ALLOW: Final = "allow"
FLAG: Final = "flag"
THROTTLE: Final = "throttle"
BLOCK: Final = "block"
SUSPEND: Final = "suspend"
"""What is done with a request. Plain strings, not an Enum: one is read on every request
(``Final``: compiled, a constant, not a look-up in the module's dict).
Only ``allow`` and ``block`` are decided today; the resale score adds the others (``flag``
lets the request through, marked)."""
ACTIONS = (ALLOW, FLAG, THROTTLE, BLOCK, SUSPEND)


class Decision(NamedTuple):
    """The answer to one request: what is done (``action``), why (``reason`` and the
    ``signals`` behind it) and the headers that go with it (``retry-after``, rate limits)."""

    reason: Reason
    principal: Principal | None = None
    key_id: str | None = None
    tenant: str | None = None
    detail: str = ""
    action: str = BLOCK
    """Defaults to ``block``: a decision built without saying otherwise fails closed."""
    headers: tuple[tuple[bytes, bytes], ...] = ()
    """Added to the response: the refusal's for a refusal, the app's for an allowed request."""
    signals: tuple[str, ...] = ()
    """What else stood behind the action (resale signals, the limit that was hit)."""

    @property
    def allowed(self) -> bool:
        """``throttle`` passes with its reason ``ok``; refused, it carries a 429's."""
        return is_allowed(self)

    def with_headers(self, headers: tuple[tuple[bytes, bytes], ...]) -> Decision:
        """This decision carrying ``headers`` (``carrying``)."""
        return carrying(self, headers)


def is_allowed(decision: Decision) -> bool:
    """``decision.allowed`` for the request path: compiled, a NamedTuple's property is reached
    through a Python attribute look-up and call, a function is one C call."""
    action = decision[5]
    return action in (ALLOW, FLAG) or (action == THROTTLE and decision[0].status < 400)


def carrying(decision: Decision, headers: tuple[tuple[bytes, bytes], ...]) -> Decision:
    """``decision`` carrying ``headers``: ``_replace`` without its keyword parsing, and a
    function, not a method (compiled, a NamedTuple's method is a Python call), since it runs on
    every limited request."""
    return _new(Decision, (decision[0], decision[1], decision[2], decision[3], decision[4],
                           decision[5], headers, decision[7]))


_new: Final = tuple.__new__
_MISSING = Decision(reasons.CREDENTIAL_MISSING, detail="no credential header")


def decide(facts: RequestFacts, auth: Principal | Refusal | None, policy: Policy,
           now: float) -> Decision:
    if facts.problem is not None:
        return _from_refusal(facts.problem)
    if auth is None:
        return _MISSING
    if isinstance(auth, Refusal):
        return _from_refusal(auth)

    p = auth
    if p.status is not KeyStatus.ACTIVE:
        reason = reasons.KEY_REVOKED if p.status is KeyStatus.REVOKED else reasons.KEY_SUSPENDED
        return _refuse(reason, p)
    if p.expires_at is not None and now >= p.expires_at:
        return _refuse(reasons.TOKEN_EXPIRED if p.kind is CredentialKind.JWT
                       else reasons.KEY_EXPIRED, p)

    tenant = policy.tenants.get(p.tenant)
    if tenant is None:
        return _refuse(reasons.TENANT_UNKNOWN, p)
    if tenant.disabled:
        return _refuse(reasons.TENANT_DISABLED, p)
    if facts.tenant_hint is not None and facts.tenant_hint != p.tenant:
        return _refuse(reasons.TENANT_MISMATCH, p, "request names another tenant")

    if tenant.allowed_networks or p.networks:
        client = facts.client
        if client is None:
            return _refuse(reasons.NETWORK_NOT_ALLOWED, p, "client address unknown")
        if tenant.allowed_networks and client not in tenant.allowed_networks:
            return _refuse(reasons.NETWORK_NOT_ALLOWED, p, "outside the tenant's networks")
        if p.networks and client not in p.networks:
            return _refuse(reasons.NETWORK_NOT_ALLOWED, p, "outside the key's networks")

    return Decision(OK, p, p.key_id, p.tenant, action=ALLOW)


def _refuse(reason: Reason, p: Principal, detail: str = "") -> Decision:
    return Decision(reason, p, p.key_id, p.tenant, detail)


def _from_refusal(refusal: Refusal) -> Decision:
    return Decision(refusal.reason, None, refusal.key_id, None, refusal.detail)
