"""In-process store: for tests, replay and single-process embedding. Dies with the process."""

from __future__ import annotations

from gatekeeper.errors import KeyExistsError
from gatekeeper.keys import KeyRecord
from gatekeeper.store.base import Store, checked_update


class MemoryStore(Store):
    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._keys: dict[str, KeyRecord] = {}

    async def get_key(self, key_id: str) -> KeyRecord | None:
        return self._keys.get(key_id)

    async def create_key(self, record: KeyRecord) -> None:
        if record.key_id in self._keys:
            raise KeyExistsError(record.key_id)
        self._keys[record.key_id] = record

    async def update_key(self, record: KeyRecord, expected_version: int) -> KeyRecord:
        # no await between the check and the write: atomic on the event loop
        stored = checked_update(self._keys.get(record.key_id), record, expected_version)
        self._keys[record.key_id] = stored
        return stored

    async def list_keys(self, tenant: str | None = None) -> list[KeyRecord]:
        records = [r for r in self._keys.values() if tenant is None or r.tenant == tenant]
        return sorted(records, key=lambda r: (r.created_at, r.key_id))
