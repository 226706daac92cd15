"""Who the client is: the TCP peer, unless a proxy we were told to trust says otherwise.

Gateways that believed any ``X-Forwarded-For`` made every IP binding spoofable, so by default
no proxy is trusted and forwarding headers are never read. With trusted proxies the header is
walked from the right (the hop the nearest proxy wrote) and the first untrusted hop is the
client; everything to its left is client-written and never parsed.

A reached hop that is not an address is a refusal, never a fallback to the proxy's own
address: the proxy may sit inside an allowed network, so falling back would be a bypass.

Hops are split on every comma (and ``Forwarded`` pairs on every semicolon) without honouring
quotes: a quote opened in the client-written part must not change how the proxy-written part
on its right is read. Addresses never contain either character.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from gatekeeper.networks import EMPTY, IPAddr, NetworkSet, parse_ip
from gatekeeper.reasons import FORWARDED_MALFORMED, Refusal

HEADERS = ("x-forwarded-for", "forwarded")
_OWS: Final = " \t"
_LONG_RUN = re.compile(r"[A-Za-z0-9_\-.]{16,}")
_MAX_HOP: Final = 1024
"""A hop longer than this is refused unread: no address needs it, and slicing it costs."""
_MAX_NODE: Final = 80
"""Longest bracketed IPv6 with zone id and port; longer texts never reach the parse cache."""
_OBFPORT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@dataclass(frozen=True, slots=True)
class ClientAddressPolicy:
    trusted_proxies: NetworkSet = EMPTY
    header: str = "x-forwarded-for"
    """Lower-case name of the header to read: ``x-forwarded-for`` or ``forwarded`` (RFC 7239)."""
    max_hops: int = 20
    """Bounds the walk, so a long chain of trusted hops cannot cost unbounded work."""


def resolve_client(peer: object, forwarded: list[str] | None,
                   policy: ClientAddressPolicy) -> IPAddr | Refusal | None:
    """The client's address; None when unknown; a Refusal when a trusted proxy's hop is junk.

    ``peer`` is ASGI's ``scope["client"]``; ``forwarded`` holds the raw values of every
    ``policy.header`` line in order (several lines read as one comma-joined value).
    """
    addr = peer_address(peer)
    trusted = policy.trusted_proxies
    if addr is None or not trusted.networks or addr not in trusted:
        return addr  # the common path: no header is even looked at
    if not forwarded:
        return addr
    if len(forwarded) == 1:
        header = forwarded[0]
        if not header or header.isspace():
            return addr
    else:
        if all(not v or v.isspace() for v in forwarded):
            return addr
        header = ",".join(forwarded)
    return _walk(header, trusted, policy.header == "forwarded", policy.max_hops)


def peer_address(peer: object) -> IPAddr | None:
    if isinstance(peer, (tuple, list)) and len(peer) == 2:
        host = peer[0]
        if isinstance(host, str) and len(host) <= _MAX_NODE:
            return parse_ip(host)
    return None


def _walk(header: str, trusted: NetworkSet, rfc7239: bool,
          max_hops: int) -> IPAddr | Refusal:
    end = len(header)
    hops = 0
    while True:
        if hops == max_hops:
            return Refusal(FORWARDED_MALFORMED, detail="too many hops")
        start = header.rfind(",", 0, end) + 1
        hops += 1
        if end - start > _MAX_HOP:
            return _malformed(hops, header[start:start + 40] + "...")
        hop = header[start:end]
        addr = _parse_element(hop) if rfc7239 else _parse_node(hop.strip(_OWS), False)
        if addr is None:
            return _malformed(hops, hop)
        if start == 0 or addr not in trusted:
            return addr
        end = start - 1


def _malformed(hops: int, hop: str) -> Refusal:
    # A hop is client text that may hold anything, a key pasted in the wrong header included:
    # long word-like runs are masked before the detail reaches the audit line.
    shown = _LONG_RUN.sub("***", hop)
    shown = shown if len(shown) <= 64 else shown[:61] + "..."
    return Refusal(FORWARDED_MALFORMED,
                   detail=f"hop {hops} from the right is not an address: {shown!r}")


def _parse_element(element: str) -> IPAddr | None:
    """The ``for=`` node of one RFC 7239 element; None if absent, repeated or not an address."""
    value: str | None = None
    for pair in element.split(";"):
        name, eq, raw = pair.partition("=")
        if eq and name.strip(_OWS).lower() == "for":
            if value is not None:
                return None  # RFC 7239 allows one per element; two is ambiguous
            value = raw.strip(_OWS)
    if value is None:
        return None
    if value.startswith('"'):
        if len(value) < 2 or not value.endswith('"'):
            return None
        value = value[1:-1]
    return _parse_node(value, True)


def _parse_node(text: str, rfc7239: bool) -> IPAddr | None:
    """An address with an optional port: ``v4``, ``v6``, ``[v6]``, ``[v6]:port``, ``v4:port``."""
    if len(text) > _MAX_NODE:
        return None
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            return None
        host = text[1:close]
        rest = text[close + 1:]
        if ":" not in host or (rest and not (rest[0] == ":" and _is_port(rest[1:], rfc7239))):
            return None  # brackets are for IPv6 only
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
        if not _is_port(port, rfc7239):
            return None
    else:
        host = text
    return parse_ip(host)


def _is_port(port: str, rfc7239: bool) -> bool:
    if port.isascii() and port.isdigit():
        return len(port) <= 5 and int(port) <= 65535
    # RFC 7239 obfuscated port: the address is still known, only the port is hidden.
    return rfc7239 and len(port) > 1 and port[0] == "_" and _OBFPORT.issuperset(port)
