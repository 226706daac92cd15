"""The shared-signals capability: each key's distinct values and request counts, pooled by
every replica, so the resale score's fan-out signals count what the whole fleet saw.

A store offers it only when it is shared by processes (Redis: ``store/redis_signals.py``); the
memory and SQLite stores do not, and a process then scores what it serves itself. Callers
check with ``isinstance`` once, at startup, never on a request: the batch that uses it runs
off the request path (``resale/shared.py``).

Contract: ``share_signals`` adds each key's new values (per dimension of
``resale/state.DIMENSIONS``: addresses, networks (an ASN when the geo data has one, else the
/24 or /48), countries, user agents, end users, models) and its new requests to the current
bucket of its window, and answers, per key, the distinct values per dimension and the requests
over the window's last ``slots`` buckets, this batch included. It is one round trip for the
whole batch (one per node on a cluster, sent together).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import NamedTuple


class KeySignals(NamedTuple):
    key_id: str
    slot: float
    """Seconds per bucket: the key's short window over ``slots``."""
    slots: int
    """Buckets per window: counts are exact to one bucket."""
    members: tuple[tuple[str, ...], ...]
    """Per dimension, the values used since the last batch (the empty tuple: none)."""
    requests: int
    """Requests counted since the last batch."""
    read: tuple[bool, ...]
    """Per dimension, whether to read its count back (the key ever had such a value here):
    a dimension it never had costs no read."""


Counts = tuple[int, ...]
"""Per key: the distinct values per dimension (0 where not read), then the requests."""


class SignalStore(ABC):
    @abstractmethod
    async def share_signals(self, batch: Sequence[KeySignals], now: float) -> list[Counts]:
        """Add the batch and read back each key's fleet-wide counts, in batch order, in one
        round trip. Raises StoreError when the backend cannot answer."""


__all__ = ["Counts", "KeySignals", "SignalStore"]
