"""Where clients are: the resolver chain (CDN header, ``.mmdb`` files, ``iptocc``), the
pure country rule and impossible travel, and the pipeline stage that applies them.
Importing this package loads neither ``iptocc`` nor ``maxminddb``."""

from __future__ import annotations

from gatekeeper.geo.location import Location, network_group
from gatekeeper.geo.rules import CountryRule, country_decision
from gatekeeper.geo.travel import TravelRule, haversine_km

__all__ = ["CountryRule", "Location", "TravelRule", "country_decision", "haversine_km",
           "network_group"]
