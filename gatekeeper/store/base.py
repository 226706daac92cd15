"""The one store interface. Key records now; counters, sketches and leases join it later.

Every backend answers the same calls and passes the same behavioural tests
(``tests/store/test_store_contract.py``). Methods are async so a network backend (Redis) fits
behind the same calls; the embedded backends answer without suspending.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod

from gatekeeper.errors import (
    KeyConflictError,
    KeyNotFoundError,
    KeyRevokedError,
    StoreError,
    redact_url,
)
from gatekeeper.keys import KeyRecord
from gatekeeper.principal import KeyStatus
from gatekeeper.resale.snapshot import Snapshot


class Store(ABC):
    """Key records, shared by every server process and the CLI.

    ``update_key`` is a compare-and-set, so two admin commands racing on one key (a revoke
    and a rotate in two processes) cannot undo each other: the write based on a stale read
    fails with ``KeyConflictError`` and its caller reads again. A store also refuses, whatever
    the caller says, to write a status other than ``revoked`` over a revoked key. Both checks
    and the write are one atomic step in every backend (SQLite: one write transaction; Redis:
    one Lua script comparing version and status before it sets the record), so every backend
    keeps the same guarantee across processes and hosts.
    """

    url: str

    @property
    def safe_url(self) -> str:
        """The URL with any password masked: what logs, errors and ``repr`` show."""
        return redact_url(self.url)

    @abstractmethod
    async def get_key(self, key_id: str) -> KeyRecord | None:
        """The record, or None. Raises StoreError when the backend cannot answer."""

    @abstractmethod
    async def create_key(self, record: KeyRecord) -> None:
        """Insert; raises KeyExistsError if the id is taken (ids are random, so: never twice)."""

    @abstractmethod
    async def update_key(self, record: KeyRecord, expected_version: int) -> KeyRecord:
        """Replace the record if its stored version is still ``expected_version``; the stored
        record, returned, has the next version. Raises KeyNotFoundError if there is none,
        KeyRevokedError if it is revoked and ``record`` is not, KeyConflictError if the
        version moved on (in which case nothing is written)."""

    @abstractmethod
    async def list_keys(self, tenant: str | None = None) -> list[KeyRecord]:
        """Records ordered by creation time, optionally of one tenant."""

    async def put_scores(self, snapshots: list[Snapshot], ttl: float, now: float) -> None:
        """Keep each key's latest resale score snapshot for ``ttl`` seconds (one batch; a
        backend shared by processes makes them readable by ``gatekeeper inspect``). This
        default keeps them in this process (the memory store)."""
        held = self.__dict__.setdefault("_scores", {})
        for snapshot in snapshots:
            held[snapshot.key_id] = (now + ttl, snapshot)

    async def get_score(self, key_id: str, now: float) -> Snapshot | None:
        """The key's latest snapshot, or None (never scored, or older than its ttl)."""
        found = self.__dict__.get("_scores", {}).get(key_id)
        return None if found is None or found[0] <= now else found[1]

    async def connect(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Get ready before the first request (Redis: load its scripts); a failure is a
        StoreError. Called at startup; every backend also works without it."""

    async def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release connections."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.safe_url!r})"


def checked_update(current: KeyRecord | None, record: KeyRecord,
                   expected_version: int) -> KeyRecord:
    """The compare-and-set rules every backend applies (atomically) before it writes."""
    if current is None:
        raise KeyNotFoundError(record.key_id)
    if current.status is KeyStatus.REVOKED and record.status is not KeyStatus.REVOKED:
        raise KeyRevokedError(record.key_id)
    if current.version != expected_version:
        raise KeyConflictError(record.key_id, expected_version, current.version)
    return record.with_changes(version=expected_version + 1)


def encode_record(record: KeyRecord) -> str:
    """A record as the compact JSON text the SQLite and Redis stores keep."""
    return json.dumps(record.to_dict(), separators=(",", ":"))


def decode_record(text: str | bytes) -> KeyRecord:
    """``encode_record`` undone; a corrupt record is a StoreError, never a traceback."""
    try:
        return KeyRecord.from_dict(json.loads(text))
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError("decode", f"corrupt key record: {type(exc).__name__}") from exc
