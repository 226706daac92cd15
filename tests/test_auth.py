"""The Authenticator's caches: what reaches the store, and how long a change takes to show."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from gatekeeper import (
    Authenticator,
    ConfigError,
    MemoryStore,
    build_key,
    compile_policy,
    key_admin,
    new_key,
    reasons,
)
from gatekeeper.credentials import Credential, credential_from
from gatekeeper.errors import StoreError
from gatekeeper.keys import MIN_PEPPER_BYTES, KeyRecord
from gatekeeper.principal import CredentialKind, KeyStatus, Principal
from gatekeeper.reasons import Refusal
from tests.conftest import PEPPER, POLICY, SteppingClock

pytestmark = pytest.mark.anyio
NOW = 1_800_000_000.0


class CountingStore(MemoryStore):
    """The real memory store, counting the lookups that reach it."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0

    async def get_key(self, key_id: str) -> KeyRecord | None:
        self.lookups += 1
        return await super().get_key(key_id)


@dataclass
class Rig:
    store: CountingStore
    auth: Authenticator
    key: str
    key_id: str
    clock: SteppingClock

    async def at(self, token: str, seconds: float) -> Principal | Refusal:
        """Authenticate ``token`` ``seconds`` after the start, wall and monotonic time alike."""
        self.clock.wall, self.clock.mono = NOW + seconds, seconds
        return await self.auth.authenticate(_cred(token), self.clock.now())


async def _setup(cache_size: int = 100_000) -> Rig:
    store, clock = CountingStore(), SteppingClock(NOW)
    key, record = await key_admin.create_key(store, PEPPER, compile_policy(POLICY), "acme", NOW)
    auth = Authenticator(store, PEPPER, cache_ttl=1.0, cache_size=cache_size, clock=clock)
    return Rig(store, auth, key, record.key_id, clock)


def _cred(token: str) -> Credential:
    credential = credential_from([(b"x-api-key", token.encode())])
    assert credential is not None and not isinstance(credential, Refusal)
    return credential


async def test_a_valid_key_is_looked_up_once_per_ttl() -> None:
    rig = await _setup()
    for i in range(100):
        result = await rig.at(rig.key, i * 0.009)
        assert isinstance(result, Principal) and result.tenant == "acme"
    assert rig.store.lookups == 1
    await rig.at(rig.key, 1.0)
    assert rig.store.lookups == 2


async def test_forged_keys_cost_one_lookup_per_ttl_not_per_request() -> None:
    rig = await _setup()
    forged = build_key("Zz" + rig.key_id[2:], "b" * 32)  # a valid checksum is easy to compute
    wrong_secret = build_key(rig.key_id, "c" * 32)
    for token in (forged, wrong_secret):
        for i in range(50):
            result = await rig.at(token, i * 0.01)
            assert isinstance(result, Refusal) and result.reason.code == "key_unknown"
    assert rig.store.lookups == 2
    await rig.at(forged, 1.5)
    assert rig.store.lookups == 3


async def test_the_refusal_cache_holds_tokens_not_key_ids() -> None:
    rig = await _setup()
    early = build_key("Ab3dEf6hIj9k", "d" * 32)
    assert isinstance(await rig.at(early, 0), Refusal)
    key, _ = await key_admin.create_key(rig.store, PEPPER, compile_policy(POLICY), "acme", NOW)
    result = await rig.at(key, 0.1)
    assert isinstance(result, Principal)  # a different token: never in the refusal cache


async def test_revocation_shows_after_the_ttl_and_reinstated_records_are_reverified() -> None:
    rig = await _setup()
    assert isinstance(await rig.at(rig.key, 0), Principal)
    await key_admin.set_status(rig.store, rig.key_id, KeyStatus.SUSPENDED, NOW)
    cached = await rig.at(rig.key, 0.5)
    assert isinstance(cached, Principal) and cached.status is KeyStatus.ACTIVE
    fresh = await rig.at(rig.key, 1.0)
    assert isinstance(fresh, Principal) and fresh.status is KeyStatus.SUSPENDED


@pytest.mark.parametrize("pepper", [b"", b"s3cr3t", b"p" * (MIN_PEPPER_BYTES - 1), "p" * 40])
def test_a_short_or_non_bytes_pepper_is_refused_without_showing_it(pepper: Any) -> None:
    with pytest.raises(ConfigError) as info:
        Authenticator(MemoryStore(), pepper)
    assert info.value.field == "pepper"
    assert str(MIN_PEPPER_BYTES) in str(info.value)
    if pepper:
        shown = pepper if isinstance(pepper, str) else pepper.decode()
        assert shown not in str(info.value) and shown not in repr(info.value.value)
    Authenticator(MemoryStore(), b"p" * MIN_PEPPER_BYTES)  # exactly enough is accepted


async def test_cache_ages_follow_the_monotonic_clock_when_wall_time_steps_back() -> None:
    rig = await _setup()
    clock, key = rig.clock, rig.key
    assert isinstance(await rig.auth.authenticate(_cred(key), clock.now()), Principal)
    await key_admin.set_status(rig.store, rig.key_id, KeyStatus.REVOKED, NOW)
    clock.wall -= 3600.0  # the wall clock steps back an hour ...
    clock.mono += 1.0     # ... while the cache TTL passes
    revoked = await rig.auth.authenticate(_cred(key), clock.now())
    assert isinstance(revoked, Principal) and revoked.status is KeyStatus.REVOKED
    lookups = rig.store.lookups
    clock.wall += 7200.0  # nor does a wall clock jumping forward expire the cache early
    assert await rig.auth.authenticate(_cred(key), clock.now()) is revoked
    assert rig.store.lookups == lookups


async def test_refused_key_cache_evicts_oldest_first_and_drops_expired_entries() -> None:
    rig = await _setup(cache_size=3)
    forged = [build_key(f"Zz{i:010d}", "f" * 32) for i in range(5)]
    for i, token in enumerate(forged[:4]):
        await rig.at(token, i * 0.1)  # the fourth evicts the first
    assert list(rig.auth._unknown) == forged[1:4]
    lookups = rig.store.lookups
    for token in forged[1:4]:
        await rig.at(token, 0.35)
    assert rig.store.lookups == lookups  # still remembered
    await rig.at(forged[0], 0.35)  # evicted, so looked up again; it evicts the oldest
    assert rig.store.lookups == lookups + 1
    assert list(rig.auth._unknown) == [*forged[2:4], forged[0]]
    # forged[2] and [3] expired at 1.2 and 1.3: a new entry drops them, the cache is not full
    await rig.at(forged[4], 1.32)
    assert list(rig.auth._unknown) == [forged[0], forged[4]]
    # an expired entry asked for again is looked up and goes to the back, as the newest
    await rig.at(forged[0], 1.5)
    assert rig.store.lookups == lookups + 3
    assert list(rig.auth._unknown) == [forged[4], forged[0]]


async def test_verified_key_cache_is_bounded_and_evicts_oldest_first() -> None:
    rig = await _setup(cache_size=2)
    policy = compile_policy(POLICY)
    keys = [rig.key] + [(await key_admin.create_key(rig.store, PEPPER, policy, "acme", NOW))[0]
                        for _ in range(2)]
    for i, key in enumerate(keys):
        assert isinstance(await rig.at(key, i * 0.1), Principal)
    assert list(rig.auth._cache) == keys[1:]
    await rig.at(keys[1], 1.15)  # expired, re-read from the store: now the newest
    assert list(rig.auth._cache) == [keys[2], keys[1]]
    await rig.at(keys[0], 1.5)  # keys[2] expired at 1.2 and is dropped first
    assert list(rig.auth._cache) == [keys[1], keys[0]]


def test_the_forged_flood_benchmark_runs() -> None:
    """benchmarks/forged_flood.py end to end on a small flood; no timing is asserted."""
    done = subprocess.run(
        [sys.executable, "benchmarks/forged_flood.py", "--keys", "300", "--rounds", "2",
         "--batch", "50"], cwd=Path(__file__).resolve().parent.parent, capture_output=True,
        text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith(("| Gate", "| Auth"))]
    assert len(rows) == 4, done.stdout


async def test_forget_drops_a_cached_verdict_so_a_pushed_change_lands_at_once() -> None:
    """What a store's change notification does: a key cached as unknown is found once it is
    created, a cached verified key is read again (revoked) at once, without waiting cache_ttl."""
    store = MemoryStore()
    authenticator = Authenticator(store, PEPPER, cache_ttl=60.0)
    key, record = new_key(PEPPER, "acme", 1_700_000_000.0)
    credential = Credential(CredentialKind.API_KEY, key, "authorization")
    first = await authenticator.authenticate(credential, 1_700_000_000.0)
    assert isinstance(first, Refusal) and first.reason is reasons.KEY_UNKNOWN
    await store.create_key(record)
    assert isinstance(await authenticator.authenticate(credential, 1_700_000_000.0), Refusal)
    authenticator.forget("SomeOtherKey")  # another key's change keeps this verdict
    assert isinstance(await authenticator.authenticate(credential, 1_700_000_000.0), Refusal)
    authenticator.forget(record.key_id)
    assert isinstance(await authenticator.authenticate(credential, 1_700_000_000.0), Principal)
    await store.update_key(record.with_changes(status=KeyStatus.REVOKED), 0)
    cached = await authenticator.authenticate(credential, 1_700_000_000.0)
    assert isinstance(cached, Principal) and cached.status is KeyStatus.ACTIVE
    authenticator.forget(None)  # everything, as after a lost subscription
    fresh = await authenticator.authenticate(credential, 1_700_000_000.0)
    assert isinstance(fresh, Principal) and fresh.status is KeyStatus.REVOKED


class FailingStore(MemoryStore):
    """The memory store, whose lookups fail (as a dead Redis's do) once ``down`` is set, each
    after ``gate`` opens: so several requests can be waiting on the store at once."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.gate = anyio.Event()

    async def get_key(self, key_id: str) -> KeyRecord | None:
        if self.down:
            await self.gate.wait()
            raise StoreError("get_key", "ConnectionError: Connection refused")
        return await super().get_key(key_id)


async def test_fail_open_believes_a_known_key_for_every_request_waiting_on_a_failing_store(
        ) -> None:
    """The expired entry stays cached while its key is re-read: a request arriving meanwhile
    (many, on a busy server) still finds it, and under fail_open is believed like the first,
    not refused as a key never seen."""
    store, clock = FailingStore(), SteppingClock(NOW)
    key, _ = await key_admin.create_key(store, PEPPER, compile_policy(POLICY), "acme", NOW)
    auth = Authenticator(store, PEPPER, cache_ttl=1.0, clock=clock, fail_open=True)
    assert isinstance(await auth.authenticate(_cred(key), NOW), Principal)
    clock.mono = 2.0  # past cache_ttl: the next request asks the store, which is now down
    store.down = True
    results: list[Principal | Refusal] = []

    async def one() -> None:
        results.append(await auth.authenticate(_cred(key), NOW))

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(one)
        await anyio.wait_all_tasks_blocked()
        store.gate.set()
    assert len(results) == 3 and all(isinstance(r, Principal) for r in results), results
