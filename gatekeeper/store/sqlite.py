"""The embedded default: one SQLite file, so keys made by the CLI reach a running server.

Reads are primary-key lookups (a few microseconds) made only on a key-cache miss, so they run
inline rather than in a thread. WAL mode lets the CLI write while servers read; a short busy
timeout keeps a locked file from stalling the event loop.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gatekeeper.errors import KeyExistsError, StoreError, StoreNotFoundError
from gatekeeper.keys import KeyRecord
from gatekeeper.resale.snapshot import Snapshot
from gatekeeper.store.base import Store, checked_update
from gatekeeper.store.base import decode_record as _decode
from gatekeeper.store.base import encode_record as _encode

_SCHEMA = """
CREATE TABLE IF NOT EXISTS gatekeeper_keys (
    key_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    created_at REAL NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS gatekeeper_keys_tenant ON gatekeeper_keys (tenant, created_at);
CREATE TABLE IF NOT EXISTS gatekeeper_scores (
    key_id TEXT PRIMARY KEY,
    expires_at REAL NOT NULL,
    snapshot TEXT NOT NULL
);
"""
_BUSY_TIMEOUT_MS = 200


@contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, taking the write lock first; rolled back when the body fails."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")


class SQLiteStore(Store):
    def __init__(self, path: str | os.PathLike[str], url: str | None = None, *,
                 create: bool = True) -> None:
        """``create=False``: a missing file is a StoreNotFoundError, not a new empty store."""
        self.path = Path(path)
        self.url = url or f"sqlite:///{self.path}"
        self.create = create
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        try:
            if not self.path.exists():
                if not self.create:
                    raise StoreNotFoundError(self.path.absolute())
                self.path.touch(mode=0o600)  # hashes only, but still nobody else's business
            conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_MS / 1000,
                                   isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            conn.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError("open", f"{self.path}: {exc}") from exc
        self._conn = conn
        return conn

    async def get_key(self, key_id: str) -> KeyRecord | None:
        try:
            row = self._connect().execute(
                "SELECT record FROM gatekeeper_keys WHERE key_id = ?", (key_id,)).fetchone()
        except sqlite3.Error as exc:
            raise StoreError("get_key", str(exc)) from exc
        return None if row is None else _decode(row[0])

    async def create_key(self, record: KeyRecord) -> None:
        try:
            self._connect().execute(
                "INSERT INTO gatekeeper_keys (key_id, tenant, created_at, record) "
                "VALUES (?, ?, ?, ?)",
                (record.key_id, record.tenant, record.created_at, _encode(record)))
        except sqlite3.IntegrityError as exc:
            raise KeyExistsError(record.key_id) from exc
        except sqlite3.Error as exc:
            raise StoreError("create_key", str(exc)) from exc

    async def update_key(self, record: KeyRecord, expected_version: int) -> KeyRecord:
        conn = self._connect()
        try:
            # IMMEDIATE takes the write lock first: no other process writes between the
            # check and the write (readers, servers included, carry on under WAL)
            with _immediate(conn):
                row = conn.execute("SELECT record FROM gatekeeper_keys WHERE key_id = ?",
                                   (record.key_id,)).fetchone()
                stored = checked_update(None if row is None else _decode(row[0]), record,
                                        expected_version)
                conn.execute("UPDATE gatekeeper_keys SET tenant = ?, record = ? WHERE key_id = ?",
                             (stored.tenant, _encode(stored), stored.key_id))
        except sqlite3.Error as exc:
            raise StoreError("update_key", str(exc)) from exc
        return stored

    async def list_keys(self, tenant: str | None = None) -> list[KeyRecord]:
        query = "SELECT record FROM gatekeeper_keys"
        args: tuple[str, ...] = ()
        if tenant is not None:
            query += " WHERE tenant = ?"
            args = (tenant,)
        try:
            rows = self._connect().execute(query + " ORDER BY created_at, key_id", args)
            return [_decode(row[0]) for row in rows.fetchall()]
        except sqlite3.Error as exc:
            raise StoreError("list_keys", str(exc)) from exc

    async def put_scores(self, snapshots: list[Snapshot], ttl: float, now: float) -> None:
        conn = self._connect()
        try:
            with _immediate(conn):  # one write for the batch
                conn.executemany(
                    "INSERT OR REPLACE INTO gatekeeper_scores (key_id, expires_at, snapshot) "
                    "VALUES (?, ?, ?)", [(s.key_id, now + ttl, s.to_text()) for s in snapshots])
                conn.execute("DELETE FROM gatekeeper_scores WHERE expires_at <= ?", (now,))
        except sqlite3.Error as exc:
            raise StoreError("put_scores", str(exc)) from exc

    async def get_score(self, key_id: str, now: float) -> Snapshot | None:
        try:
            row = self._connect().execute(
                "SELECT snapshot FROM gatekeeper_scores WHERE key_id = ? AND expires_at > ?",
                (key_id, now)).fetchone()
        except sqlite3.Error as exc:
            raise StoreError("get_score", str(exc)) from exc
        return None if row is None else Snapshot.from_text(row[0])

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

