"""Where a client address is, as far as some resolver knows, and which resolver said so.

A ``Location`` is a plain NamedTuple: the audit line, the CLI and a replay show the source of
every answer, so a security team can tell a CDN's word from a database's. ``network_group`` is
what the resale score counts distinct values of: the ASN when a file provides it (one cloud
provider is one network however many addresses it rotates through), else the /24 or /48.
"""

from __future__ import annotations

import socket
from typing import NamedTuple

from gatekeeper.networks import IPAddr

CDN_HEADER = "cdn-header"
MMDB = "mmdb"
EMBEDDED = "embedded"
NOWHERE = "none"
"""The source of a location no resolver knew anything about."""


class Location(NamedTuple):
    country: str | None
    """ISO 3166-1 alpha-2, upper case; None when unknown (or hidden: Tor per a CDN)."""
    asn: int | None = None
    as_name: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    source: str = NOWHERE
    """Which resolver answered the country: cdn-header, mmdb, embedded, or none."""
    network: str | None = None
    """``network_group`` of the address it was resolved for (the resale score counts these);
    None when there was no address."""


UNKNOWN = Location(None)


def network_group(addr: IPAddr, asn: int | None = None) -> str:
    """``AS64496`` when the ASN is known, else the address's /24 (IPv4) or /48 (IPv6)."""
    if asn is not None:
        return f"AS{asn}"
    if addr.version == 4:
        v = addr.value >> 8
        return f"{v >> 16}.{(v >> 8) & 0xFF}.{v & 0xFF}.0/24"
    prefix = (addr.value >> 80) << 80
    return f"{socket.inet_ntop(socket.AF_INET6, prefix.to_bytes(16, 'big'))}/48"
