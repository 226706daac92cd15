"""The country rule: allow, deny, unknown, and a key narrowing its tenant; refusals never say
which countries would have worked."""

from __future__ import annotations

import pytest

from gatekeeper import reasons
from gatekeeper.geo.location import CDN_HEADER, EMBEDDED, Location
from gatekeeper.geo.rules import CountryRule, country_decision

DE, BR = Location("DE", source=EMBEDDED), Location("BR", source=EMBEDDED)
NOWHERE = Location(None)
TOR = Location(None, source=CDN_HEADER)
EUROPE = CountryRule(frozenset({"DE", "FR"}))


def test_no_rule_allows_everything() -> None:
    assert country_decision(BR, None, None) is None
    assert country_decision(NOWHERE, None, None) is None


def test_allow_list() -> None:
    assert country_decision(DE, EUROPE, None) is None
    refused = country_decision(BR, EUROPE, None)
    assert refused is not None and refused[0] is reasons.COUNTRY_NOT_ALLOWED
    assert "BR" in refused[1] and "tenant" in refused[1]


def test_deny_list() -> None:
    no_brazil = CountryRule(deny=frozenset({"BR"}))
    assert country_decision(DE, no_brazil, None) is None
    assert country_decision(BR, no_brazil, None) is not None


@pytest.mark.parametrize(("unknown", "refused"), [("allow", False), ("flag", False),
                                                  ("deny", True)])
def test_unknown_location(unknown: str, refused: bool) -> None:
    rule = CountryRule(frozenset({"DE"}), unknown=unknown)
    for where in (NOWHERE, TOR):
        assert (country_decision(where, rule, None) is not None) is refused
    assert country_decision(DE, rule, None) is None


def test_a_key_narrows_its_tenant() -> None:
    germany_only = CountryRule(frozenset({"DE"}))
    france = Location("FR", source=EMBEDDED)
    assert country_decision(france, EUROPE, None) is None
    refused = country_decision(france, EUROPE, germany_only)
    assert refused is not None and "key" in refused[1]
    assert country_decision(DE, EUROPE, germany_only) is None
    # a key cannot widen: Brazil on the key does not pass the tenant's Europe rule
    assert country_decision(BR, EUROPE, CountryRule(frozenset({"BR"}))) is not None


def test_a_key_rule_alone_applies() -> None:
    assert country_decision(BR, None, EUROPE) is not None
    assert country_decision(DE, None, EUROPE) is None


def test_refusals_never_name_the_countries_that_would_work() -> None:
    rule = CountryRule(frozenset({"DE", "FR"}), frozenset({"RU"}), unknown="deny")
    for where in (BR, NOWHERE, Location("RU", source=EMBEDDED)):
        refused = country_decision(where, rule, rule)
        assert refused is not None
        reason, detail = refused
        for shown in (detail, reason.message, reason.body.decode()):
            assert "DE" not in shown and "FR" not in shown, shown
    assert reasons.COUNTRY_NOT_ALLOWED.status == 403
    assert reasons.COUNTRY_NOT_ALLOWED.stage == "decide"
