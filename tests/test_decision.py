"""``decide`` is a pure function: these tests feed it facts and principals, no I/O at all."""

from __future__ import annotations

import pytest

from gatekeeper import (
    NetworkSet,
    Principal,
    Refusal,
    RequestFacts,
    compile_policy,
    decide,
    parse_ip,
)
from gatekeeper import reasons as r
from gatekeeper.decision import ACTIONS, Decision, is_allowed
from gatekeeper.networks import parse_network
from gatekeeper.principal import CredentialKind, KeyStatus
from tests.conftest import POLICY

POL = compile_policy(POLICY)
NOW = 1_800_000_000.0


def facts(client: str | None = "192.0.2.10", hint: str | None = None,
          problem: Refusal | None = None) -> RequestFacts:
    return RequestFacts("POST", "/v1/chat/completions",
                        parse_ip(client) if client else None, None, hint, None, problem)


def key(tenant: str = "acme", status: KeyStatus = KeyStatus.ACTIVE,
        expires_at: float | None = None, networks: tuple[str, ...] = (),
        kind: CredentialKind = CredentialKind.API_KEY) -> Principal:
    return Principal(kind, "k1", tenant, status, expires_at,
                     NetworkSet(parse_network(n) for n in networks))


@pytest.mark.parametrize(("request_facts", "principal", "expected"), [
    (facts(), key(), r.OK),
    (facts(), None, r.CREDENTIAL_MISSING),
    (facts(problem=Refusal(r.FORWARDED_MALFORMED)), key(), r.FORWARDED_MALFORMED),
    # status is decided before binding: a revoked key is "revoked" from anywhere
    (facts("203.0.113.1"), key(status=KeyStatus.REVOKED), r.KEY_REVOKED),
    (facts(), key(status=KeyStatus.SUSPENDED), r.KEY_SUSPENDED),
    (facts(), key(expires_at=NOW), r.KEY_EXPIRED),
    (facts(), key(expires_at=NOW + 1), r.OK),
    (facts(), key(kind=CredentialKind.JWT, expires_at=NOW - 1), r.TOKEN_EXPIRED),
    (facts(), key(tenant="umbrella"), r.TENANT_UNKNOWN),
    (facts(), key(tenant="initech"), r.TENANT_DISABLED),
    (facts(hint="globex"), key(), r.TENANT_MISMATCH),
    (facts(hint="acme"), key(), r.OK),
    (facts("203.0.113.1"), key(), r.NETWORK_NOT_ALLOWED),            # tenant's networks
    (facts("192.0.2.10"), key(networks=("192.0.2.128/25",)), r.NETWORK_NOT_ALLOWED),  # key's
    (facts("203.0.113.1"), key(tenant="globex"), r.OK),               # globex has no networks
    (facts("203.0.113.1"), key(tenant="globex", networks=("203.0.113.0/24",)), r.OK),
    (facts(None), key(), r.NETWORK_NOT_ALLOWED),                      # unknown client
    (facts(None), key(tenant="globex"), r.OK),
    (facts("::ffff:192.0.2.10"), key(), r.OK),                        # v4-mapped is v4
])
def test_decide(request_facts: RequestFacts, principal: Principal | None,
                expected: r.Reason) -> None:
    decision = decide(request_facts, principal, POL, NOW)
    assert decision.reason is expected
    assert decision.allowed == (expected is r.OK)
    if principal is not None and request_facts.problem is None:
        assert (decision.key_id, decision.tenant) == ("k1", principal.tenant)


def test_refusal_from_authentication_keeps_its_key_id() -> None:
    decision = decide(facts(), Refusal(r.KEY_UNKNOWN, "abc", "no such key id"), POL, NOW)
    assert (decision.reason, decision.key_id, decision.detail) == (
        r.KEY_UNKNOWN, "abc", "no such key id")


def test_same_inputs_same_answer() -> None:
    inputs = (facts("203.0.113.1"), key(), POL, NOW)
    assert decide(*inputs) == decide(*inputs)


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("reason", [r.OK, r.RATE_LIMITED, r.RESALE_THROTTLED, r.KEY_SUSPENDED])
def test_is_allowed_is_the_allowed_property(action: str, reason: r.Reason) -> None:
    """The request path asks ``is_allowed`` (one C call compiled); everything else reads the
    property: both must say the same for every action and reason."""
    decision = Decision(reason, action=action)
    expected = action in ("allow", "flag") or (action == "throttle" and reason.status < 400)
    assert is_allowed(decision) is decision.allowed is expected
