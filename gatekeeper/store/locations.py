"""The location capability: where and when each key was last used, for impossible travel.

Separate from key records and counters, like ``counters.py``: a backend offers what it can,
and the default keeps locations in process memory (each worker sees only its own requests;
shared state needs the Redis store). When the Redis store lands, ``seen`` folds into the
request's one-call plan (read the previous sighting and write the new one in the same
script as the counters), so impossible travel costs no extra round trip.

Contract: ``seen(key, sighting)`` stores ``sighting`` as the key's latest and returns the one
it replaces (None the first time, or after it was forgotten). Time is only what the sighting
carries. Backend failures surface as ``StoreError`` (the caller's fail rule applies).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict

from gatekeeper.errors import GatekeeperError, StoreError
from gatekeeper.geo.travel import Sighting

DEFAULT_MAX_KEYS = 100_000


class LocationStore(ABC):
    async def seen(self, key: str, sighting: Sighting) -> Sighting | None:
        """Record ``sighting`` as ``key``'s latest; the previous one, if any."""
        try:
            return await self._seen(key, sighting)
        except GatekeeperError:
            raise
        except Exception as exc:
            raise StoreError("seen", f"{type(exc).__name__}: {exc}") from exc

    @abstractmethod
    async def _seen(self, key: str, sighting: Sighting) -> Sighting | None: ...

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class MemoryLocationStore(LocationStore):
    """The last sighting of up to ``max_keys`` keys; the least recently used is forgotten
    first (O(1): ``move_to_end`` and ``popitem(last=False)``). A forgotten key starts again
    from its next use: forgetting only ever misses one pair, never invents one."""

    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.max_keys = max_keys
        self._last: OrderedDict[str, Sighting] = OrderedDict()

    def __len__(self) -> int:
        return len(self._last)

    def seen_now(self, key: str, sighting: Sighting) -> Sighting | None:
        last = self._last
        before = last.pop(key, None)
        if before is None and len(last) >= self.max_keys:
            last.popitem(last=False)
        last[key] = sighting
        return before

    async def seen(self, key: str, sighting: Sighting) -> Sighting | None:
        return self.seen_now(key, sighting)  # no I/O: one coroutine, nothing to wrap

    async def _seen(self, key: str, sighting: Sighting) -> Sighting | None:
        return self.seen_now(key, sighting)
