"""One request as the resale score sees it: who used which key from where, asking what.

``event_for`` builds it from what the pipeline already knows (the decision, the client's
``Location``, the header and body facts); the tenant's known shape is applied here, once, so
``observe`` only counts: an address inside a declared network (a CI fleet, a cloud region)
carries that network's name, and an address on the NAT egress list is marked shared.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from gatekeeper.geo.location import Location
from gatekeeper.geo.travel import Sighting, sighting
from gatekeeper.networks import IPAddr
from gatekeeper.policy.resale import ResaleSettings

INVALID_REASONS = frozenset({
    "body_invalid", "body_not_json", "body_too_large", "model_not_allowed",
    "field_not_allowed", "max_tokens_too_large", "n_too_large"})
"""Refusals that say the request itself was malformed or out of policy (key checkers send
these on purpose, expecting a 400)."""


class Event(NamedTuple):
    ts: float
    key_id: str
    address: str | None = None
    network: str | None = None
    country: str | None = None
    user_agent: str | None = None
    end_user: str | None = None
    model: str | None = None
    listing: bool = False
    """``GET .../models``: a key checker's first call."""
    tiny: bool = False
    """``max_tokens`` (or ``max_completion_tokens``) of 0 or 1: a probe, not a use."""
    invalid: bool = False
    """Refused as malformed, or a completion request with no messages or input."""
    duration: float = 0.0
    """Seconds the upstream took: the request is in flight until ``ts + duration``."""
    shared: bool = False
    """The address is a declared NAT egress: many people, so no end-user signal."""
    known_network: bool = False
    """Inside the tenant's declared networks or ASNs: never new."""
    place: Sighting | None = None
    """Where it was, for impossible travel."""


def network_of(settings: ResaleSettings, addr: IPAddr | None,
               location: Location) -> tuple[str | None, bool]:
    """The network a request is counted under (a declared known network's name, else the
    located one) and whether the tenant declared it legitimate (by network or ASN)."""
    known = settings.known
    network = location.network
    if addr is not None:
        for name, nets in known.networks:
            if addr in nets:
                return name, True
    return network, location.asn is not None and location.asn in known.asns


def event_for(settings: ResaleSettings, ts: float, key_id: str, addr: IPAddr | None,
              location: Location, method: str, path: str, user_agent: str | None,
              body: Any, reason_code: str, duration: float = 0.0) -> Event:
    """The event for one request of a known key, allowed or refused."""
    network, known_network = network_of(settings, addr, location)
    model = end_user = None
    tiny = False
    invalid = reason_code in INVALID_REASONS
    if isinstance(body, dict):
        found = body.get("model")
        model = found if isinstance(found, str) else None
        found = body.get("user")
        end_user = found if isinstance(found, str) and found else None
        limit = body.get("max_tokens", body.get("max_completion_tokens"))
        tiny = isinstance(limit, int) and not isinstance(limit, bool) and limit <= 1
        if not body.get("messages") and not body.get("input") and not body.get("prompt"):
            invalid = invalid or method == "POST"
    elif method == "POST":
        invalid = True
    return Event(ts, key_id, None if addr is None else addr.text, network, location.country,
                 user_agent, end_user, model,
                 method == "GET" and path.rstrip("/").endswith("/models"), tiny, invalid,
                 max(0.0, duration), addr is not None and addr in settings.known.nat_egress,
                 known_network, sighting(location, ts))
