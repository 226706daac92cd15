"""The location capability: the previous sighting back, bounded memory, errors wrapped."""

from __future__ import annotations

import pytest

from gatekeeper.errors import StoreError
from gatekeeper.geo.travel import Sighting
from gatekeeper.store.locations import LocationStore, MemoryLocationStore

pytestmark = pytest.mark.anyio


def _at(t: float) -> Sighting:
    return Sighting("DE", 50.0, 8.0, t)


async def test_seen_returns_the_previous_sighting_and_keeps_the_new_one() -> None:
    store = MemoryLocationStore()
    assert await store.seen("a", _at(1)) is None
    assert await store.seen("a", _at(2)) == _at(1)
    assert await store.seen("b", _at(3)) is None
    assert await store.seen("a", _at(4)) == _at(2)


async def test_memory_is_bounded_and_the_least_recently_used_key_goes_first() -> None:
    store = MemoryLocationStore(max_keys=2)
    await store.seen("a", _at(1))
    await store.seen("b", _at(2))
    await store.seen("a", _at(3))  # a is now the most recently used
    await store.seen("c", _at(4))  # evicts b
    assert len(store) == 2
    assert await store.seen("b", _at(5)) is None  # forgotten: starts again (evicts a)
    assert await store.seen("c", _at(6)) == _at(4)  # c stayed
    assert await store.seen("a", _at(7)) is None  # a went when b came back
    with pytest.raises(ValueError, match="max_keys"):
        MemoryLocationStore(max_keys=0)


class _Broken(LocationStore):
    async def _seen(self, key: str, sighting: Sighting) -> Sighting | None:
        raise OSError("connection reset")


async def test_backend_failures_surface_as_store_errors() -> None:
    with pytest.raises(StoreError, match="seen"):
        await _Broken().seen("a", _at(1))
