"""The one store interface. Key records now; counters, sketches and leases join it later.

Every backend answers the same calls and passes the same behavioural tests
(``tests/store/test_store_contract.py``). Methods are async so a network backend (Redis) fits
behind the same calls; the embedded backends answer without suspending.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from gatekeeper.keys import KeyRecord


class Store(ABC):
    url: str

    @abstractmethod
    async def get_key(self, key_id: str) -> KeyRecord | None:
        """The record, or None. Raises StoreError when the backend cannot answer."""

    @abstractmethod
    async def create_key(self, record: KeyRecord) -> None:
        """Insert; raises KeyExistsError if the id is taken (ids are random, so: never twice)."""

    @abstractmethod
    async def update_key(self, record: KeyRecord) -> None:
        """Replace an existing record; raises KeyNotFoundError if there is none."""

    @abstractmethod
    async def list_keys(self, tenant: str | None = None) -> list[KeyRecord]:
        """Records ordered by creation time, optionally of one tenant."""

    async def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release connections."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"
