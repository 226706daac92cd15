"""Key lifecycle under concurrency: two processes on one SQLite file, as the CLI and a second
operator (or a script) would be. A revocation is for good, whatever runs beside it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import pytest

from gatekeeper import SQLiteStore, compile_policy, key_admin
from gatekeeper.errors import GatekeeperError, KeyConflictError, KeyRevokedError
from gatekeeper.keys import KeyRecord
from gatekeeper.principal import KeyStatus

pytestmark = pytest.mark.anyio

PEPPER = b"key-admin-pepper-0123456789abcdefghij"
NOW = 1_700_000_000.0
POLICY = compile_policy({"tenants": {"acme": {}}})


class Interleaved(SQLiteStore):
    """A real SQLite store that lets another writer run right after its next read of a key:
    the moment between an admin command's read and its write, made deterministic."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.between: list[Callable[[], Awaitable[object]]] = []

    async def get_key(self, key_id: str) -> KeyRecord | None:
        record = await super().get_key(key_id)
        if self.between:
            await self.between.pop(0)()
        return record


async def _two_processes(tmp_path: Path) -> tuple[Interleaved, SQLiteStore, str]:
    path = tmp_path / "keys.db"
    first, other = Interleaved(path), SQLiteStore(path)
    _, record = await key_admin.create_key(first, PEPPER, POLICY, "acme", NOW)
    return first, other, record.key_id


async def test_a_revoke_between_a_rotates_read_and_write_stays_revoked(tmp_path: Path) -> None:
    rotating, other, key_id = await _two_processes(tmp_path)
    rotating.between.append(
        lambda: key_admin.set_status(other, key_id, KeyStatus.REVOKED, NOW + 1))
    try:
        with pytest.raises(GatekeeperError) as info:
            await key_admin.rotate_key(rotating, PEPPER, key_id, NOW + 2, 3600.0)
        assert "revoked" in str(info.value)
        assert key_id in str(info.value)
        final = await other.get_key(key_id)
        assert final is not None and final.status is KeyStatus.REVOKED
        assert final.expires_at is None  # the rotate's grace period was not written either
        # and no replacement key was left behind for a key that is revoked
        assert [r.key_id for r in await other.list_keys()] == [key_id]
    finally:
        await rotating.close()
        await other.close()


@pytest.mark.parametrize("status", [KeyStatus.ACTIVE, KeyStatus.SUSPENDED])
async def test_a_revoke_between_a_status_changes_read_and_write_stays_revoked(
        tmp_path: Path, status: KeyStatus) -> None:
    changing, other, key_id = await _two_processes(tmp_path)
    await key_admin.set_status(other, key_id, KeyStatus.SUSPENDED, NOW)
    changing.between.append(
        lambda: key_admin.set_status(other, key_id, KeyStatus.REVOKED, NOW + 1))
    try:
        with pytest.raises(KeyRevokedError) as info:
            await key_admin.set_status(changing, key_id, status, NOW + 2)
        assert info.value.key_id == key_id
        final = await other.get_key(key_id)
        assert final is not None and final.status is KeyStatus.REVOKED
    finally:
        await changing.close()
        await other.close()


async def test_a_lost_race_with_a_harmless_write_is_retried(tmp_path: Path) -> None:
    """A suspend landing in between is not a reason to fail: the rotate reads again."""
    rotating, other, key_id = await _two_processes(tmp_path)

    async def suspend_and_reinstate() -> None:
        await key_admin.set_status(other, key_id, KeyStatus.SUSPENDED, NOW + 1)
        await key_admin.set_status(other, key_id, KeyStatus.ACTIVE, NOW + 1)

    rotating.between.append(suspend_and_reinstate)
    try:
        _, new, old = await key_admin.rotate_key(rotating, PEPPER, key_id, NOW + 2, 60.0)
        stored = await other.get_key(key_id)
        assert stored == old
        assert await other.get_key(new.key_id) == new
        assert stored is not None and stored.status is KeyStatus.ACTIVE
        assert stored.expires_at == NOW + 2 + 60.0
        assert stored.version == 3  # created 0, suspended 1, reinstated 2, rotated 3
    finally:
        await rotating.close()
        await other.close()


async def test_a_key_changing_under_every_attempt_is_a_clear_conflict(tmp_path: Path) -> None:
    changing, other, key_id = await _two_processes(tmp_path)
    for i in range(20):
        status = KeyStatus.SUSPENDED if i % 2 == 0 else KeyStatus.ACTIVE
        changing.between.append(partial(key_admin.set_status, other, key_id, status, NOW + 1))
    try:
        with pytest.raises(KeyConflictError) as info:
            await key_admin.set_status(changing, key_id, KeyStatus.REVOKED, NOW + 2)
        assert key_id in str(info.value)
        assert "try again" in str(info.value)
    finally:
        await changing.close()
        await other.close()
