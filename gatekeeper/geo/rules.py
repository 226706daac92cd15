"""The country rule: a pure function of a location and the tenant's and the key's rules.

A key narrows its tenant: the request must pass both rules. The refusal's detail (audit only)
names the country seen and which rule refused it, never the countries that would have
worked; the client is told only ``country_not_allowed``.

``unknown`` says what a location without a country gets (no resolver knew, or a CDN reported
Tor): ``allow``, ``deny``, or ``flag``. ``flag`` is accepted today and allows: it will feed
the resale score when that lands (see the README's geo section).
"""

from __future__ import annotations

from dataclasses import dataclass

from gatekeeper import reasons
from gatekeeper.geo.location import Location
from gatekeeper.reasons import Reason

ALLOW, DENY, FLAG = "allow", "deny", "flag"
UNKNOWN_CHOICES = (ALLOW, DENY, FLAG)


@dataclass(frozen=True, slots=True, eq=False)
class CountryRule:
    allow: frozenset[str] = frozenset()
    """When not empty, only these countries pass."""
    deny: frozenset[str] = frozenset()
    unknown: str = ALLOW

    def refuses(self, country: str | None) -> bool:
        if country is None:
            return self.unknown == DENY
        if self.allow and country not in self.allow:
            return True
        return country in self.deny


Verdict = tuple[Reason, str] | None
"""None: allowed; else the reason and its audit detail."""


def country_decision(location: Location, tenant_rule: CountryRule | None,
                     key_rule: CountryRule | None) -> Verdict:
    country = location.country
    if tenant_rule is not None and tenant_rule.refuses(country):
        return reasons.COUNTRY_NOT_ALLOWED, _detail(location, "tenant")
    if key_rule is not None and key_rule.refuses(country):
        return reasons.COUNTRY_NOT_ALLOWED, _detail(location, "key")
    return None


def _detail(location: Location, whose: str) -> str:
    seen = location.country or "unknown"
    return f"country {seen} (from {location.source}) refused by the {whose}'s country rule"
