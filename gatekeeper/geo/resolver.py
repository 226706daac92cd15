"""The resolver chain: a trusted CDN's header, then the operator's files, then ``iptocc``.

Each answer carries its source. An address is looked up at most once while it stays in a
bounded cache; eviction is first-in first-out with ``OrderedDict.popitem(last=False)``, O(1)
however long the cache churns (a plain dict evicted with ``next(iter(d))`` slows down as dead
slots pile up at its front, FIELD-NOTES). A hit does not move the entry: an attacker who
churns addresses evicts an LRU cache just as well, and a hit stays one C-level ``get``.

Every answer for an address carries its ``network`` group (ASN, else /24 or /48), computed
once per cached address. The CDN's word is per request, not per address, so it is never
cached; when a CDN answers, the files are still asked for the ASN and coordinates (if any file
is configured), the country being the CDN's.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from gatekeeper.geo.cdn import CdnCountry, country_from_value
from gatekeeper.geo.embedded import EmbeddedResolver
from gatekeeper.geo.location import UNKNOWN, Location, network_group
from gatekeeper.networks import IPAddr

if TYPE_CHECKING:
    from gatekeeper.geo.mmdb import MmdbFile
    from gatekeeper.policy.geo import GeoPolicy

DEFAULT_CACHE_SIZE = 65_536


class GeoResolver:
    __slots__ = ("_cache", "cache_size", "cdn", "embedded", "files")

    def __init__(self, files: Sequence[MmdbFile] = (), *, cdn: CdnCountry | None = None,
                 embedded: EmbeddedResolver | None = None, use_embedded: bool = True,
                 cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        """``files``: opened ``.mmdb`` files, asked in order (the first to know a field wins);
        ``use_embedded=False`` leaves an address the files do not know unknown."""
        if cache_size < 1:
            raise ValueError("cache_size must be at least 1")
        self.files = tuple(files)
        self.cdn = cdn
        self.embedded = (embedded or EmbeddedResolver()) if use_embedded else None
        self.cache_size = cache_size
        self._cache: OrderedDict[str, Location] = OrderedDict()

    def locate(self, addr: IPAddr | None, headers: list[tuple[bytes, bytes]] | None = None,
               peer_trusted: bool = False) -> Location:
        """The request's location: the CDN header when the peer is trusted and the header is
        valid, else the address's (cached). ``addr`` None (no client address) is unknown."""
        value = None
        if self.cdn is not None and headers is not None and peer_trusted:
            value = self.cdn.read(headers, peer_trusted)
        return self.locate_value(addr, value, peer_trusted)

    def locate_value(self, addr: IPAddr | None, cdn_value: bytes | None,
                     peer_trusted: bool) -> Location:
        """As ``locate``, for a caller whose header scan already holds the CDN header's raw
        value (one loop over the headers per request). The trust rule is applied here."""
        if cdn_value is not None and peer_trusted and self.cdn is not None:
            said = country_from_value(cdn_value)
            if said is not None:
                if addr is None:
                    return said
                if said.country is None or not self.files:
                    return said._replace(network=network_group(addr))
                known = self.lookup(addr)
                return said._replace(network=known.network) \
                    if known.asn is None and known.latitude is None else \
                    known._replace(country=said.country, source=said.source)
        if addr is None:
            return UNKNOWN
        return self.lookup(addr)

    def lookup(self, addr: IPAddr) -> Location:
        """The address's location from the files, then the embedded resolver; cached."""
        found = self._cache.get(addr.text)
        if found is not None:
            return found
        found = self._resolve(addr)
        found = found._replace(network=network_group(addr, found.asn))
        cache = self._cache
        if len(cache) >= self.cache_size:
            cache.popitem(last=False)
        cache[addr.text] = found
        return found

    def _resolve(self, addr: IPAddr) -> Location:
        found = None
        if self.files:
            from gatekeeper.geo.mmdb import merge

            found = merge(self.files, addr)
            if found is not None and found.country is not None:
                return found
        if self.embedded is not None:
            country = self.embedded.lookup(addr)
            if country is not None:
                return country if found is None else \
                    found._replace(country=country.country, source=country.source)
        return found if found is not None else UNKNOWN

    def reload(self, paths: Sequence[str | os.PathLike[str] | None] | None = None) -> None:
        """Reopen every file (or open ``paths[i]`` in place of file i) and drop the cache.
        A file that cannot be read raises ``ConfigError`` and keeps its old reader (and the
        files after it theirs); the cache is dropped either way, as earlier files changed."""
        try:
            for i, file in enumerate(self.files):
                file.reload(None if paths is None else paths[i])
        finally:
            self._cache = OrderedDict()

    def __contains__(self, addr: object) -> bool:
        """Whether ``addr`` is cached (its next lookup costs one dict get)."""
        return isinstance(addr, IPAddr) and addr.text in self._cache

    def __len__(self) -> int:
        """Addresses in the cache."""
        return len(self._cache)


def open_files(specs: Sequence[tuple[str, str]], max_age_days: float | None,
               clock: Callable[[], float] = time.time) -> list[MmdbFile]:
    """Open ``(field, path)`` pairs; imports ``maxminddb`` only when some file is configured
    (it costs about 60 ms at import)."""
    if not specs:
        return []
    from gatekeeper.geo.mmdb import MmdbFile

    return [MmdbFile(path, field, max_age_days, clock) for field, path in specs]


def resolver_from_policy(geo: GeoPolicy, clock: Callable[[], float] = time.time
                         ) -> GeoResolver:
    """The chain a policy's ``geo`` section describes; opens its files (``ConfigError``
    naming the field when one cannot be read) and warns about stale ones."""
    return GeoResolver(open_files(geo.files, geo.max_age_days, clock),
                       cdn=CdnCountry(geo.cdn_header) if geo.cdn_header else None)
