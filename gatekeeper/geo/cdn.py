"""A CDN's country header, believed only when the TCP peer is a trusted proxy.

The rule is the one for X-Forwarded-For (``RequestFacts.peer_trusted``): any client can send
``CF-IPCountry: DE``; only a request that came through an edge we trust carries a value the
edge wrote. From anyone else the header is ignored, not refused: it changes nothing. Set
``geo.cdn_header`` only when every trusted proxy overwrites that header (Cloudflare does for
``CF-IPCountry``): a trusted load balancer that passes a client's copy through would make it
believed. Two differing copies cancel out; a ``cf_ipcountry`` spelling is never read.

Values are two ASCII letters, case-folded to upper case. Cloudflare's special values:

- ``XX`` (no country data for this client): no answer; the address resolvers are asked;
- ``T1`` (a Tor exit): the country is hidden on purpose, so the location is *unknown* (source
  ``cdn-header``) and the address resolvers are not asked: the exit node's country says
  nothing about the client. A rule's ``unknown`` setting decides what Tor gets.

Anything else (empty, three letters, non-ASCII) is ignored as malformed and the address
resolvers are asked.
"""

from __future__ import annotations

from gatekeeper.geo.location import CDN_HEADER, Location

CLOUDFLARE = "cf-ipcountry"
CLOUDFRONT = "cloudfront-viewer-country"
NO_DATA = b"XX"
TOR = b"T1"
HIDDEN = Location(None, source=CDN_HEADER)
"""The location of a Tor client as a CDN reports it: unknown, and known to be unknown."""

_ANSWERS: dict[bytes, Location] = {}


def country_from_value(value: bytes) -> Location | None:
    """A header value to a location: None means "no answer here, ask the address resolvers"."""
    found = _ANSWERS.get(value)
    if found is not None:
        return found
    code = value.strip().upper()
    if code == TOR:
        return HIDDEN
    if len(code) != 2 or not code.isalpha() or not code.isascii() or code == NO_DATA:
        return None
    if len(_ANSWERS) < 4096:  # bounded: every case spelling of every pair fits
        _ANSWERS[value] = Location(code.decode(), source=CDN_HEADER)
        return _ANSWERS[value]
    return Location(code.decode(), source=CDN_HEADER)


class CdnCountry:
    """Reads one configured country header from a raw ASGI header list."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name.strip().lower().encode("ascii")

    def read(self, headers: list[tuple[bytes, bytes]], peer_trusted: bool) -> bytes | None:
        """The header's raw value, or None when absent or when the peer is not trusted. Two
        copies that differ cancel out (None): a proxy that appends must not let a client's
        own copy win."""
        if not peer_trusted:
            return None
        found: bytes | None = None
        name = self.name
        for key, value in headers:
            if key == name or (not key.islower() and key.lower() == name):
                if found is not None and found != value:
                    return None
                found = value
        return found
