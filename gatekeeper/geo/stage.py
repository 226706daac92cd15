"""The geo stage of the pipeline: country rules and impossible travel, after ``decide``.

It runs only on the miss path (``pipeline.evaluate``) and only for a principal whose tenant
has a country or travel rule, or whose key has countries: everyone else pays one dict lookup
there and nothing on reused decisions. A reused decision is safe without it: its record key
holds everything the location depends on (peer, forwarding headers, the CDN header's raw
value), so the same record always means the same place.

Travel state is written on the miss path only. A decision record lives at most
``keys.cache_ttl`` (1 s by default), so a key in steady use from one client is sighted again
at least that often: the stored time lags by at most the TTL, which can only make a computed
speed lower by ``ttl / elapsed``, never invent one. Every use that passes the country rules
is recorded, whether travel refuses it or not: a key used on two continents at once keeps
being refused on both sides while the tenant's travel rule says ``deny``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from gatekeeper import reasons
from gatekeeper.decision import FLAG, Decision
from gatekeeper.errors import StoreError
from gatekeeper.geo.rules import FLAG as UNKNOWN_FLAG
from gatekeeper.geo.rules import CountryRule, country_decision
from gatekeeper.geo.travel import DENY, TravelRule, impossible, sighting
from gatekeeper.networks import IPAddr
from gatekeeper.principal import Principal
from gatekeeper.store.locations import LocationStore

if TYPE_CHECKING:
    from gatekeeper.geo.resolver import GeoResolver
    from gatekeeper.policy.geo import GeoPolicy
    from gatekeeper.policy.model import Policy

log = logging.getLogger("gatekeeper")

COUNTRY_UNKNOWN = "country_unknown"
IMPOSSIBLE_TRAVEL = "impossible_travel"
TRAVEL_UNCHECKED = "travel_unchecked"
"""Signals a flagged decision carries (``Decision.signals``)."""

Rules = tuple[CountryRule | None, CountryRule | None, TravelRule | None]
"""(the tenant's country rule, the key's, the tenant's travel rule)."""


class GeoStage:
    """Compiled once per runtime. The resolver is opened at once when the policy names
    files (so a bad file stops startup), else on first use (``iptocc`` loads then)."""

    __slots__ = ("_clock", "_geo", "_resolver", "_tenants", "locations")

    def __init__(self, policy: Policy, locations: LocationStore,
                 clock: Callable[[], float] = time.time) -> None:
        self._tenants: dict[str, tuple[CountryRule | None, TravelRule | None]] = {
            name: (t.countries, t.travel) for name, t in policy.tenants.items()
            if t.countries is not None or t.travel is not None}
        self._geo = policy.geo
        self._clock = clock
        self._resolver: GeoResolver | None = None
        if policy.geo.files:
            self._resolver = _resolver(policy.geo, clock)
        self.locations = locations

    @property
    def opened(self) -> bool:
        """Whether the resolver was built: never, while no request needed a location."""
        return self._resolver is not None

    @property
    def resolver(self) -> GeoResolver:
        if self._resolver is None:
            self._resolver = _resolver(self._geo, self._clock)
        return self._resolver

    def rules_for(self, principal: Principal | None) -> Rules | None:
        """What this principal is held to; None (the common case) when nothing."""
        if principal is None:
            return None
        tenant = self._tenants.get(principal.tenant)
        if tenant is None:
            return None if principal.countries is None else (None, principal.countries, None)
        return tenant[0], principal.countries, tenant[1]

    async def check(self, rules: Rules, decision: Decision, client: IPAddr | None,
                    cdn_value: bytes | None, peer_trusted: bool, now: float) -> Decision:
        """``decision`` (allowed) held to ``rules``: refused, flagged, or unchanged."""
        location = self.resolver.locate_value(client, cdn_value, peer_trusted)
        tenant_rule, key_rule, travel = rules
        verdict = country_decision(location, tenant_rule, key_rule)
        if verdict is not None:
            return _refuse(decision, verdict[0], verdict[1])
        if location.country is None and tenant_rule is not None and \
                tenant_rule.unknown == UNKNOWN_FLAG:
            decision = _flag(decision, COUNTRY_UNKNOWN)
        if travel is None or decision.key_id is None:
            return decision
        seen = sighting(location, now)
        if seen is None:
            return decision
        try:
            before = await self.locations.seen(decision.key_id, seen)
        except StoreError as exc:
            log.error("location store unavailable, travel not checked: %s", exc)
            if travel.action == DENY:
                return _refuse(decision, reasons.STORE_UNAVAILABLE, "location store: seen")
            return _flag(decision, TRAVEL_UNCHECKED)
        speed = impossible(before, seen, travel)
        if speed is None:
            return decision
        assert before is not None
        detail = f"{before.country or '?'} -> {seen.country or '?'} at {speed:.0f} km/h"
        if travel.action == DENY:
            return _refuse(decision, reasons.IMPOSSIBLE_TRAVEL, detail)
        return _flag(decision, IMPOSSIBLE_TRAVEL)


def _resolver(geo: GeoPolicy, clock: Callable[[], float]) -> GeoResolver:
    from gatekeeper.geo.resolver import resolver_from_policy

    return resolver_from_policy(geo, clock)


def _refuse(decision: Decision, reason: reasons.Reason, detail: str) -> Decision:
    return Decision(reason, decision.principal, decision.key_id, decision.tenant, detail,
                    signals=decision.signals)


def _flag(decision: Decision, signal: str) -> Decision:
    return decision._replace(action=FLAG, signals=(*decision.signals, signal))
