"""The Authenticator's caches: what reaches the store, and how long a change takes to show."""

from __future__ import annotations

from typing import Any

import pytest

from gatekeeper import (
    Authenticator,
    ConfigError,
    ManualClock,
    MemoryStore,
    build_key,
    compile_policy,
    key_admin,
)
from gatekeeper.credentials import Credential, credential_from
from gatekeeper.keys import MIN_PEPPER_BYTES, KeyRecord
from gatekeeper.principal import KeyStatus, Principal
from gatekeeper.reasons import Refusal
from tests.conftest import PEPPER, POLICY

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


async def _setup() -> tuple[CountingStore, Authenticator, str, str]:
    store = CountingStore()
    key, record = await key_admin.create_key(store, PEPPER, compile_policy(POLICY), "acme", NOW)
    return store, Authenticator(store, PEPPER, cache_ttl=1.0), key, record.key_id


def _cred(token: str) -> Credential:
    credential = credential_from([(b"x-api-key", token.encode())])
    assert credential is not None and not isinstance(credential, Refusal)
    return credential


async def test_a_valid_key_is_looked_up_once_per_ttl() -> None:
    store, auth, key, _ = await _setup()
    for i in range(100):
        result = await auth.authenticate(_cred(key), NOW + i * 0.009)
        assert isinstance(result, Principal) and result.tenant == "acme"
    assert store.lookups == 1
    await auth.authenticate(_cred(key), NOW + 1.0)
    assert store.lookups == 2


async def test_forged_keys_cost_one_lookup_per_ttl_not_per_request() -> None:
    store, auth, _, key_id = await _setup()
    forged = build_key("Zz" + key_id[2:], "b" * 32)  # a valid checksum is easy to compute
    wrong_secret = build_key(key_id, "c" * 32)
    for token in (forged, wrong_secret):
        for i in range(50):
            result = await auth.authenticate(_cred(token), NOW + i * 0.01)
            assert isinstance(result, Refusal) and result.reason.code == "key_unknown"
    assert store.lookups == 2
    await auth.authenticate(_cred(forged), NOW + 1.5)
    assert store.lookups == 3


async def test_the_refusal_cache_holds_tokens_not_key_ids() -> None:
    store, auth, _, _ = await _setup()
    early = build_key("Ab3dEf6hIj9k", "d" * 32)
    assert isinstance(await auth.authenticate(_cred(early), NOW), Refusal)
    key, _ = await key_admin.create_key(store, PEPPER, compile_policy(POLICY), "acme", NOW)
    result = await auth.authenticate(_cred(key), NOW + 0.1)
    assert isinstance(result, Principal)  # a different token: never in the refusal cache


async def test_revocation_shows_after_the_ttl_and_reinstated_records_are_reverified() -> None:
    store, auth, key, key_id = await _setup()
    assert isinstance(await auth.authenticate(_cred(key), NOW), Principal)
    await key_admin.set_status(store, key_id, KeyStatus.SUSPENDED, NOW)
    cached = await auth.authenticate(_cred(key), NOW + 0.5)
    assert isinstance(cached, Principal) and cached.status is KeyStatus.ACTIVE
    fresh = await auth.authenticate(_cred(key), NOW + 1.0)
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
