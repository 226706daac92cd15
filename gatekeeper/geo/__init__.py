"""Where clients are: the resolver chain (CDN header, ``.mmdb`` files, ``iptocc``) and the
pure country rule. Importing this package loads neither ``iptocc`` nor ``maxminddb``."""

from __future__ import annotations

from gatekeeper.geo.location import Location, network_group
from gatekeeper.geo.rules import CountryRule, country_decision

__all__ = ["CountryRule", "Location", "country_decision", "network_group"]
