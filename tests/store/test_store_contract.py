"""The behaviour every key store shares, run against each backend; then what only SQLite adds
(a file other processes see, its permissions, its failures) and ``store_from_url``."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from gatekeeper import (
    ConfigError,
    GatekeeperError,
    KeyConflictError,
    KeyExistsError,
    KeyNotFoundError,
    KeyRecord,
    KeyRevokedError,
    MemoryStore,
    SQLiteStore,
    Store,
    StoreError,
    StoreNotFoundError,
    new_key,
    store_from_url,
)
from gatekeeper.principal import KeyStatus
from gatekeeper.store import DEFAULT_STORE_URL
from gatekeeper.store.redis import RedisStore
from gatekeeper.store.redis_cluster import RedisClusterStore
from tests.store.conftest import empty_redis_store

pytestmark = pytest.mark.anyio

PEPPER = b"store-contract-pepper-0123456789abcdef"
NOW = 1_700_000_000.0


def record(tenant: str = "acme", created: float = NOW, **kwargs: object) -> KeyRecord:
    return new_key(PEPPER, tenant, created, **kwargs)[1]  # type: ignore[arg-type]


@pytest.fixture(params=["memory", "sqlite", "redis", "redis-cluster"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    s: Store
    if request.param.startswith("redis"):
        s = await empty_redis_store(request.getfixturevalue(
            "redis_port" if request.param == "redis" else "redis_cluster_url"))
    else:
        s = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "keys.db")
    try:
        yield s
    finally:
        await s.close()


# --- the contract ---------------------------------------------------------------------------

async def test_create_then_get_returns_an_equal_record(store: Store) -> None:
    rec = record(allowed_networks=("192.0.2.0/24",), expires_at=NOW + 60,
                 labels={"team": "ml"}, rotated_from="OldKeyId0001")
    await store.create_key(rec)
    got = await store.get_key(rec.key_id)
    assert got == rec
    assert got is not None
    assert got.labels == {"team": "ml"}
    assert got.allowed_networks == ("192.0.2.0/24",)


async def test_get_of_a_missing_key_is_none(store: Store) -> None:
    assert await store.get_key("NoSuchKey000") is None
    await store.create_key(record())
    assert await store.get_key("NoSuchKey000") is None
    assert await store.get_key("") is None


async def test_duplicate_create_raises_key_exists_and_keeps_the_first(store: Store) -> None:
    first = record()
    await store.create_key(first)
    imposter = first.with_changes(tenant="globex", secret_hash=b"\x00" * 32)
    with pytest.raises(KeyExistsError) as info:
        await store.create_key(imposter)
    assert info.value.key_id == first.key_id
    assert isinstance(info.value, GatekeeperError)
    assert await store.get_key(first.key_id) == first


async def test_update_replaces_the_record(store: Store) -> None:
    rec = record()
    await store.create_key(rec)
    revoked = rec.with_changes(status=KeyStatus.REVOKED, updated_at=NOW + 5,
                               expires_at=NOW + 10, labels={"why": "leaked"})
    stored = await store.update_key(revoked, rec.version)
    assert stored == revoked.with_changes(version=rec.version + 1)
    got = await store.get_key(rec.key_id)
    assert got == stored
    assert got is not None and got.status is KeyStatus.REVOKED


async def test_update_can_move_a_key_to_another_tenant(store: Store) -> None:
    rec = record("acme")
    await store.create_key(rec)
    await store.update_key(rec.with_changes(tenant="globex"), 0)
    assert [r.key_id for r in await store.list_keys("globex")] == [rec.key_id]
    assert await store.list_keys("acme") == []


async def test_update_of_a_missing_key_raises_key_not_found(store: Store) -> None:
    ghost = record()
    with pytest.raises(KeyNotFoundError) as info:
        await store.update_key(ghost, 0)
    assert info.value.key_id == ghost.key_id
    assert await store.get_key(ghost.key_id) is None  # an update never creates


async def test_list_is_ordered_by_creation_and_filters_by_tenant(store: Store) -> None:
    a2 = record("acme", NOW + 20)
    g1 = record("globex", NOW + 10)
    a1 = record("acme", NOW)
    a3 = record("acme", NOW + 30)
    for rec in (a2, g1, a1, a3):
        await store.create_key(rec)
    assert [r.key_id for r in await store.list_keys()] == [
        a1.key_id, g1.key_id, a2.key_id, a3.key_id]
    assert [r.key_id for r in await store.list_keys(None)] == [
        a1.key_id, g1.key_id, a2.key_id, a3.key_id]
    assert [r.key_id for r in await store.list_keys("acme")] == [a1.key_id, a2.key_id, a3.key_id]
    assert await store.list_keys("globex") == [g1]
    assert await store.list_keys("initech") == []
    assert await store.list_keys("ACME") == []  # tenant names are exact


async def test_list_breaks_creation_ties_by_key_id(store: Store) -> None:
    recs = [record("acme", NOW) for _ in range(10)]
    for rec in recs:
        await store.create_key(rec)
    assert [r.key_id for r in await store.list_keys()] == sorted(r.key_id for r in recs)


async def test_list_of_an_empty_store_is_empty(store: Store) -> None:
    assert await store.list_keys() == []


async def test_list_returns_current_records_after_update(store: Store) -> None:
    rec = record()
    await store.create_key(rec)
    await store.update_key(rec.with_changes(status=KeyStatus.SUSPENDED), 0)
    (listed,) = await store.list_keys("acme")
    assert listed.status is KeyStatus.SUSPENDED


async def test_update_is_conditional_on_the_version_read(store: Store) -> None:
    """Compare-and-set: a write based on a stale read is refused and changes nothing."""
    rec = record()
    await store.create_key(rec)
    assert rec.version == 0
    first = await store.update_key(rec.with_changes(status=KeyStatus.SUSPENDED), 0)
    assert first.version == 1
    with pytest.raises(KeyConflictError) as info:
        await store.update_key(rec.with_changes(labels={"stale": "write"}), 0)
    err = info.value
    assert isinstance(err, GatekeeperError)
    assert (err.key_id, err.expected_version, err.found_version) == (rec.key_id, 0, 1)
    assert await store.get_key(rec.key_id) == first
    second = await store.update_key(first.with_changes(status=KeyStatus.ACTIVE), 1)
    assert second.version == 2
    assert await store.get_key(rec.key_id) == second


async def test_update_sets_the_version_whatever_the_record_says(store: Store) -> None:
    rec = record()
    await store.create_key(rec)
    stored = await store.update_key(rec.with_changes(version=99), 0)
    assert stored.version == 1
    assert (await store.get_key(rec.key_id)) == stored


@pytest.mark.parametrize("status", [KeyStatus.ACTIVE, KeyStatus.SUSPENDED])
async def test_the_store_never_writes_a_status_over_revoked(store: Store,
                                                           status: KeyStatus) -> None:
    rec = record()
    await store.create_key(rec)
    revoked = await store.update_key(rec.with_changes(status=KeyStatus.REVOKED), 0)
    # even with the right version: revocation is for good, whatever the caller says
    with pytest.raises(KeyRevokedError) as info:
        await store.update_key(revoked.with_changes(status=status), revoked.version)
    assert info.value.key_id == rec.key_id
    assert isinstance(info.value, GatekeeperError)
    assert await store.get_key(rec.key_id) == revoked
    # a revoked key may still be written as revoked (revoking again is harmless)
    again = await store.update_key(revoked.with_changes(updated_at=NOW + 9), revoked.version)
    assert again.status is KeyStatus.REVOKED and again.version == revoked.version + 1


async def test_repr_names_the_backend_and_url(store: Store) -> None:
    assert type(store).__name__ in repr(store)
    assert store.url in repr(store)


async def test_connect_is_optional_and_may_be_called_again(store: Store) -> None:
    rec = record()
    await store.create_key(rec)
    await store.connect()
    await store.connect()
    assert await store.get_key(rec.key_id) == rec


async def test_close_is_idempotent(store: Store) -> None:
    await store.create_key(record())
    await store.close()
    await store.close()


# --- SQLite: one file shared by processes ---------------------------------------------------

async def test_sqlite_records_survive_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    first = SQLiteStore(path)
    recs = [record("acme", NOW + i, labels={"n": str(i)}) for i in range(3)]
    for rec in recs:
        await first.create_key(rec)
    await first.close()

    second = SQLiteStore(path)
    try:
        assert await second.list_keys() == recs
        assert await second.get_key(recs[1].key_id) == recs[1]
    finally:
        await second.close()


async def test_sqlite_a_second_store_sees_the_first_ones_writes_live(tmp_path: Path) -> None:
    """How `gatekeeper keys revoke` reaches a running server: both keep their connection."""
    path = tmp_path / "keys.db"
    server, cli = SQLiteStore(path), SQLiteStore(path)
    try:
        rec = record()
        await cli.create_key(rec)
        assert await server.get_key(rec.key_id) == rec  # server reads: connection now open

        await cli.update_key(
            rec.with_changes(status=KeyStatus.REVOKED, updated_at=NOW + 1), rec.version)
        seen = await server.get_key(rec.key_id)
        assert seen is not None and seen.status is KeyStatus.REVOKED

        later = record(created=NOW + 2)
        await server.create_key(later)
        assert [r.key_id for r in await cli.list_keys()] == [rec.key_id, later.key_id]
        with pytest.raises(KeyExistsError):
            await cli.create_key(later)
    finally:
        await server.close()
        await cli.close()


async def test_sqlite_records_written_before_versions_still_load_and_update(
        tmp_path: Path) -> None:
    """Files written by earlier releases hold records without a version (or a status)."""
    path = tmp_path / "keys.db"
    store = SQLiteStore(path)
    await store.list_keys()  # creates the schema
    old = {"key_id": "OldRecord001", "tenant": "acme", "secret_hash": "00ff",
           "created_at": NOW, "updated_at": NOW}
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO gatekeeper_keys VALUES ('OldRecord001', 'acme', ?, ?)",
                     (NOW, json.dumps(old)))
        conn.execute("INSERT INTO gatekeeper_keys VALUES ('OldRevoked01', 'acme', ?, ?)",
                     (NOW, json.dumps({**old, "key_id": "OldRevoked01", "status": "revoked"})))
    conn.close()
    try:
        got = await store.get_key("OldRecord001")
        assert got is not None and got.version == 0 and got.status is KeyStatus.ACTIVE
        stored = await store.update_key(got.with_changes(status=KeyStatus.SUSPENDED), 0)
        assert stored.version == 1
        revoked = await store.get_key("OldRevoked01")
        assert revoked is not None
        with pytest.raises(KeyRevokedError):
            await store.update_key(revoked.with_changes(status=KeyStatus.ACTIVE), 0)
    finally:
        await store.close()


@pytest.fixture(params=["sqlite", "redis", "redis-cluster"])
async def two_handles(request: pytest.FixtureRequest,
                      tmp_path: Path) -> AsyncIterator[tuple[Store, Store]]:
    """Two stores on the same data, as two processes (a server and the CLI) hold them."""
    if request.param == "sqlite":
        pair: tuple[Store, Store] = (SQLiteStore(tmp_path / "keys.db"),
                                     SQLiteStore(tmp_path / "keys.db"))
    else:
        where = request.getfixturevalue(
            "redis_port" if request.param == "redis" else "redis_cluster_url")
        first = await empty_redis_store(where)
        pair = (first, store_from_url(first.url))
    try:
        yield pair
    finally:
        for s in pair:
            await s.close()


async def test_compare_and_set_holds_across_two_stores_on_one_backend(
        two_handles: tuple[Store, Store]) -> None:
    """Two processes: the second write based on the same read loses, and says so."""
    one, two = two_handles
    rec = record()
    await one.create_key(rec)
    read_by_one, read_by_two = await one.get_key(rec.key_id), await two.get_key(rec.key_id)
    assert read_by_one is not None and read_by_two is not None
    await two.update_key(read_by_two.with_changes(status=KeyStatus.REVOKED), 0)
    with pytest.raises(KeyRevokedError):
        await one.update_key(read_by_one.with_changes(status=KeyStatus.ACTIVE), 0)
    with pytest.raises(KeyConflictError):
        await one.update_key(read_by_one.with_changes(status=KeyStatus.REVOKED), 0)
    final = await one.get_key(rec.key_id)
    assert final is not None and final.status is KeyStatus.REVOKED and final.version == 1


async def test_sqlite_file_is_created_private(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    store = SQLiteStore(path)
    try:
        assert not path.exists()  # nothing happens until first use
        await store.create_key(record())
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        # WAL side files take the database file's mode
        for side in (tmp_path / "keys.db-wal", tmp_path / "keys.db-shm"):
            if side.exists():
                assert stat.S_IMODE(side.stat().st_mode) == 0o600, side
    finally:
        await store.close()


async def test_sqlite_file_is_private_even_under_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        store = SQLiteStore(tmp_path / "keys.db")
        assert await store.get_key("NoSuchKey000") is None
        await store.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "keys.db").stat().st_mode) == 0o600


async def test_sqlite_uses_wal_so_readers_and_the_cli_coexist(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    store = SQLiteStore(path)
    await store.create_key(record())
    await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


async def test_sqlite_creates_the_file_lazily_and_reads_an_empty_store(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "fresh.db")
    try:
        assert await store.list_keys() == []
        assert (tmp_path / "fresh.db").exists()
    finally:
        await store.close()


async def test_sqlite_can_be_used_again_after_close(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "keys.db")
    rec = record()
    await store.create_key(rec)
    await store.close()
    try:
        assert await store.get_key(rec.key_id) == rec  # reconnects
    finally:
        await store.close()


@pytest.mark.parametrize("relative", [False, True])
async def test_sqlite_without_create_refuses_a_missing_file_naming_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, relative: bool) -> None:
    """A server must not answer key_unknown for every key from an empty file it just made."""
    monkeypatch.chdir(tmp_path)
    url = "sqlite:///data/keys.db" if relative else f"sqlite:///{tmp_path / 'data' / 'keys.db'}"
    (tmp_path / "data").mkdir()
    store = store_from_url(url, create=False)
    try:
        for call in (lambda: store.get_key("AnyKeyId0001"), lambda: store.list_keys()):
            with pytest.raises(StoreNotFoundError) as info:
                await call()
            err = info.value
            assert isinstance(err, StoreError) and isinstance(err, GatekeeperError)
            assert err.path == tmp_path / "data" / "keys.db"
            assert str(tmp_path / "data" / "keys.db") in str(err)
            assert "gatekeeper keys create" in str(err)
        assert not (tmp_path / "data" / "keys.db").exists()
    finally:
        await store.close()


async def test_sqlite_without_create_opens_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    maker = SQLiteStore(path)  # what the CLI does: create=True, the default
    rec = record()
    await maker.create_key(rec)
    await maker.close()
    reader = SQLiteStore(path, create=False)
    try:
        assert await reader.get_key(rec.key_id) == rec
    finally:
        await reader.close()


# --- SQLite failures are StoreErrors -----------------------------------------------------------

def bad_paths(tmp_path: Path) -> dict[str, Path]:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database, just some bytes " * 200)
    directory = tmp_path / "a-directory.db"
    directory.mkdir()
    plain = tmp_path / "plain-file"
    plain.write_text("x")
    return {
        "garbage": garbage,
        "directory": directory,
        "missing-parent": tmp_path / "no" / "such" / "dir" / "keys.db",
        "under-a-file": plain / "keys.db",
    }


@pytest.mark.parametrize("case", ["garbage", "directory", "missing-parent", "under-a-file"])
@pytest.mark.parametrize("operation", ["get", "create", "update", "list"])
async def test_sqlite_unusable_path_raises_store_error(tmp_path: Path, case: str,
                                                       operation: str) -> None:
    path = bad_paths(tmp_path)[case]
    store = SQLiteStore(path)
    rec = record()
    try:
        with pytest.raises(StoreError) as info:
            if operation == "get":
                await store.get_key(rec.key_id)
            elif operation == "create":
                await store.create_key(rec)
            elif operation == "update":
                await store.update_key(rec, 0)
            else:
                await store.list_keys()
        err = info.value
        assert isinstance(err, GatekeeperError)
        assert not isinstance(err, sqlite3.Error)
        assert err.operation == "open"
        assert str(path) in str(err)
    finally:
        await store.close()


async def test_sqlite_corrupt_record_raises_store_error(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    store = SQLiteStore(path)
    good = record()
    await store.create_key(good)
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO gatekeeper_keys VALUES ('BadRecord001', 'acme', ?, ?)",
                     (NOW + 1, '{"key_id": "BadRecord001", "tenant": "acme", "secret_hash": "zz"}'))
        conn.execute("INSERT INTO gatekeeper_keys VALUES ('NotJson00001', 'acme', ?, 'not json')",
                     (NOW + 2,))
        conn.execute("INSERT INTO gatekeeper_keys VALUES ('BadStatus001', 'acme', ?, ?)",
                     (NOW + 3, '{"key_id": "BadStatus001", "tenant": "acme", '
                               '"secret_hash": "00", "status": "bogus"}'))
    conn.close()
    try:
        assert await store.get_key(good.key_id) == good  # one bad row spoils nothing else
        for key_id in ("BadRecord001", "NotJson00001", "BadStatus001"):
            with pytest.raises(StoreError) as info:
                await store.get_key(key_id)
            assert info.value.operation == "decode"
        with pytest.raises(StoreError):
            await store.list_keys()
    finally:
        await store.close()


async def test_sqlite_dropped_table_raises_store_error(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    store = SQLiteStore(path)
    await store.create_key(record())
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE gatekeeper_keys")
    conn.close()
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "get_key": lambda: store.get_key("AnyKeyId0001"),
        "list_keys": lambda: store.list_keys(),
        "update_key": lambda: store.update_key(record(), 0),
        "create_key": lambda: store.create_key(record()),
    }
    try:
        for name, call in calls.items():
            with pytest.raises(StoreError) as info:
                await call()
            assert info.value.operation == name
    finally:
        await store.close()


# --- store_from_url -----------------------------------------------------------------------------

async def test_memory_url() -> None:
    store = store_from_url("memory://")
    assert isinstance(store, MemoryStore)
    assert store.url == "memory://"
    assert await store.list_keys() == []
    # every call builds its own store: memory is per object
    assert store_from_url("memory://") is not store


async def test_sqlite_relative_url_is_relative_to_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = store_from_url("sqlite:///keys.db")
    assert isinstance(store, SQLiteStore)
    assert store.path == Path("keys.db")
    assert store.url == "sqlite:///keys.db"
    try:
        await store.create_key(record())
    finally:
        await store.close()
    assert (tmp_path / "keys.db").is_file()


async def test_sqlite_relative_url_with_directories(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    store = store_from_url("sqlite:///data/keys.db")
    assert isinstance(store, SQLiteStore)
    assert store.path == Path("data/keys.db")
    await store.close()


async def test_sqlite_absolute_url(tmp_path: Path) -> None:
    target = tmp_path / "abs.db"
    url = f"sqlite:///{target}"  # target starts with '/', so four slashes in all
    assert url.startswith("sqlite:////")
    store = store_from_url(url)
    assert isinstance(store, SQLiteStore)
    assert store.path == target
    assert store.url == url
    try:
        rec = record()
        await store.create_key(rec)
    finally:
        await store.close()
    other = SQLiteStore(target)
    try:
        assert await other.get_key(rec.key_id) == rec
    finally:
        await other.close()


def test_default_store_url_is_a_valid_sqlite_url() -> None:
    assert isinstance(store_from_url(DEFAULT_STORE_URL), SQLiteStore)


@pytest.mark.parametrize("url", [
    "",
    "keys.db",
    "/var/lib/keys.db",
    "sqlite://keys.db",
    "sqlite://",
    "sqlite:///",
    "sqlite:////",
    "sqlite:////var/lib/",
    "sqlite:",
    "sqlite:/keys.db",
    "memory",
    "memory:",
    "postgres://db/keys",
    "SQLITE:///keys.db",
    "http://example.com/keys",
    "file:///tmp/keys.db",
])
def test_bad_urls_raise_config_error_naming_the_value(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        store_from_url(url)
    err = info.value
    assert err.field == "store"
    assert err.value == url
    assert f'"{url}"' in str(err)
    assert isinstance(err, GatekeeperError)


def test_bad_url_error_names_the_field_given() -> None:
    with pytest.raises(ConfigError) as info:
        store_from_url("nope", "--store")
    assert info.value.field == "--store"
    assert str(info.value).startswith('--store: "nope"')


@pytest.mark.parametrize("url,kind", [
    ("redis://localhost:6379/0", RedisStore), ("rediss://cache:6380", RedisStore),
    ("redis://:secret@cache/1?socket_timeout=0.5", RedisStore),
    ("redis+cluster://a:7000,b:7001", RedisClusterStore),
    ("rediss+cluster://:secret@10.0.0.1:7000/?socket_timeout=0.5", RedisClusterStore),
    ("redis+cluster://[::1]:7000", RedisClusterStore),
])
async def test_redis_urls_build_a_store_without_connecting(url: str, kind: type[Store]) -> None:
    store = store_from_url(url)
    assert type(store) is kind and store.url == url
    assert "secret" not in repr(store)
    await store.close()


@pytest.mark.parametrize("url", ["redis://", "redis:///0", "redis://cache:port/0",
                                 "rediss://:secret@cache/0?socket_timeout=soon",
                                 "redis://user:secret/x@cache/0"])  # parsed: port "secret"
def test_bad_redis_urls_raise_config_error_without_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        store_from_url(url, "--store")
    assert info.value.field == "--store"
    assert "secret" not in str(info.value)
    assert "redis://" in str(info.value) or "rediss://" in str(info.value)


@pytest.mark.parametrize("url,says", [
    ("redis+cluster://a,b", "seed 'a' is not host:port"),
    ("redis+cluster://", "is not host:port"),
    ("redis+cluster://a:7000,b:port", "seed 'b:port'"),
    ("rediss+cluster://:secret@a:7000?socket_timeout=soon", "'socket_timeout' is not a number"),
    ("redis+cluster://a:7000?db=2", "unknown option 'db'"),
])
def test_bad_redis_cluster_urls_say_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        store_from_url(url)
    message = str(info.value)
    assert "Redis Cluster" in message and says in message
    assert "secret" not in message


async def test_score_snapshots_keep_the_latest_until_their_ttl(store: Store) -> None:
    from gatekeeper.resale.snapshot import Snapshot

    first = Snapshot("KeyIdScore01", "acme", NOW, 55.0, "flag",
                     ("networks=9 (+25)", "model_listings=4 (+20)"))
    other = Snapshot("KeyIdScore02", None, NOW, 0.0, "allow")
    await store.put_scores([first, other], 60.0, NOW)
    assert await store.get_score("KeyIdScore01", NOW + 1) == first
    assert await store.get_score("KeyIdScore02", NOW + 1) == other
    later = first._replace(at=NOW + 5, score=130.0, would="suspend")
    await store.put_scores([later], 60.0, NOW + 5)
    assert await store.get_score("KeyIdScore01", NOW + 6) == later
    assert await store.get_score("NoSuchKey000", NOW + 6) is None
    if not isinstance(store, RedisStore):  # Redis expires by its own clock: its TTL is set
        assert await store.get_score("KeyIdScore02", NOW + 61) is None
    else:
        assert 0 < await store.redis.ttl("gk:{scores}:KeyIdScore01") <= 60
