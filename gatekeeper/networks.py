"""IP addresses as (version, int) pairs and CIDR sets precomputed for O(prefix lengths) lookups.

``ipaddress`` objects cost about a microsecond each to build; the hot path instead parses with
``inet_pton`` (strict: no leading zeros, no short forms) and tests membership with one shift
and one set lookup per distinct prefix length.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

_V4_MAPPED: Final = 0xFFFF << 32
_CACHE_MAX: Final = 65_536


@dataclass(frozen=True, slots=True)
class IPAddr:
    version: int
    value: int
    text: str
    """Canonical form (an IPv4-mapped IPv6 address is shown and matched as IPv4)."""


_cache: dict[str, IPAddr | None] = {}


def parse_ip(text: str) -> IPAddr | None:
    """Parse one address strictly; None when it is not one. Results are cached (peers repeat)."""
    try:
        return _cache[text]
    except KeyError:
        pass
    addr = _parse(text)
    if len(_cache) >= _CACHE_MAX:
        _cache.clear()
    _cache[text] = addr
    return addr


def _parse(text: str) -> IPAddr | None:
    if not text or len(text) > 64:
        return None
    try:
        if ":" not in text:
            return IPAddr(4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big"), text)
        bare = text.split("%", 1)[0]  # a zone id (fe80::1%eth0) names an interface, not a host
        value = int.from_bytes(socket.inet_pton(socket.AF_INET6, bare), "big")
    except (OSError, ValueError):
        return None
    if value >> 32 == 0xFFFF and value & ~0xFFFFFFFF == _V4_MAPPED:
        v4 = value & 0xFFFFFFFF
        return IPAddr(4, v4, socket.inet_ntop(socket.AF_INET, v4.to_bytes(4, "big")))
    return IPAddr(6, value, socket.inet_ntop(socket.AF_INET6, value.to_bytes(16, "big")))


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(text: str) -> Network:
    """Parse a CIDR (or a bare address) strictly; raises ValueError on anything else.

    Host bits must be zero: ``10.0.0.1/8`` is almost always a typo for a narrower rule.
    """
    if not isinstance(text, str):
        raise ValueError("not a string")
    return ipaddress.ip_network(text.strip(), strict=True)


class NetworkSet:
    """An immutable set of CIDRs; ``addr in nets`` is a few set lookups, no allocation."""

    __slots__ = ("_tables", "networks")

    def __init__(self, networks: Iterable[Network] = ()) -> None:
        nets = tuple(sorted(set(networks), key=lambda n: (n.version, n.network_address,
                                                          n.prefixlen)))
        self.networks = nets
        tables: dict[int, dict[int, set[int]]] = {4: {}, 6: {}}
        for net in nets:
            width = 32 if net.version == 4 else 128
            shift = width - net.prefixlen
            tables[net.version].setdefault(shift, set()).add(int(net.network_address) >> shift)
        self._tables: dict[int, tuple[tuple[int, frozenset[int]], ...]] = {
            version: tuple(sorted((s, frozenset(v)) for s, v in by_shift.items()))
            for version, by_shift in tables.items()
        }

    @classmethod
    def parse(cls, texts: Iterable[str]) -> NetworkSet:
        return cls(parse_network(t) for t in texts)

    def __contains__(self, addr: object) -> bool:
        if not isinstance(addr, IPAddr):
            return False
        value = addr.value
        for shift, prefixes in self._tables[addr.version]:  # noqa: SIM110 - faster than any()
            if value >> shift in prefixes:
                return True
        return False

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __len__(self) -> int:
        return len(self.networks)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NetworkSet) and self.networks == other.networks

    def __hash__(self) -> int:
        return hash(self.networks)

    def __repr__(self) -> str:
        return f"NetworkSet({[str(n) for n in self.networks]!r})"

    def texts(self) -> list[str]:
        return [str(n) for n in self.networks]


EMPTY = NetworkSet()
