"""From a credential to a Principal: the one place that touches the key store and JWT keys.

Order of work is cheapest first: the verified-credential cache (a dict hit), then the
checksum (garbage never reaches the store), then the store, then one HMAC. A cached key is
re-read from the store after ``cache_ttl`` seconds of the monotonic clock, which bounds how
long a revocation takes to reach this process, whatever the wall clock does.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections import OrderedDict
from typing import Any

from gatekeeper import reasons
from gatekeeper.breaker import Breaker
from gatekeeper.clock import Clock, SystemClock
from gatekeeper.credentials import Credential
from gatekeeper.errors import ConfigError, StoreError
from gatekeeper.jwt_verifier import JwtVerifier
from gatekeeper.keys import (
    MIN_PEPPER_BYTES,
    PREFIXES,
    KeyRecord,
    hash_secret,
    key_parser,
    principal_for,
)
from gatekeeper.principal import CredentialKind, Principal
from gatekeeper.reasons import Refusal
from gatekeeper.store.base import Store

log = logging.getLogger("gatekeeper")

_BAD_CHECKSUM = Refusal(reasons.CREDENTIAL_MALFORMED, detail="not a valid key (format or checksum)")
_NO_ISSUERS = Refusal(reasons.TOKEN_INVALID, detail="no JWT issuers configured")
_STORE_LOG_INTERVAL = 10.0
_PURGE_PER_INSERT = 2
"""Expired entries dropped from the front per insert: twice the rate they expire at, so they
never pile up, and never a long pause to drop a whole flood at once."""


def checked_pepper(pepper: bytes | str) -> bytes:
    """``pepper`` if it is one (typed to take a str only to refuse it by name: the compiled
    build would refuse it with a bare TypeError)."""
    if not isinstance(pepper, bytes) or len(pepper) < MIN_PEPPER_BYTES:
        # the value is a secret: say what it must be, never what it is
        raise ConfigError("pepper", "(secret)",
                          f"must be bytes, at least {MIN_PEPPER_BYTES} of them")
    return pepper


class Authenticator:
    def __init__(self, store: Store, pepper: bytes | str, *, cache_ttl: float = 1.0,
                 verifier: JwtVerifier | None = None, cache_size: int = 100_000,
                 clock: Clock | None = None, breaker: Breaker | None = None,
                 fail_open: bool = False, prefixes: tuple[str, ...] = PREFIXES) -> None:
        """``breaker``: the key store's circuit breaker (shared by the process's runtimes);
        ``fail_open``: while the store fails, a key verified before is still believed;
        ``prefixes``: the key prefixes accepted (``keys.prefix`` and ``accepted_prefixes``)."""
        self.store = store
        self._pepper = checked_pepper(pepper)
        self._ttl = cache_ttl
        self._jwt = verifier
        clock = clock or SystemClock()
        # the system clock's monotonic() is time.monotonic: one Python call less per cache hit
        self._monotonic = time.monotonic if type(clock) is SystemClock else clock.monotonic
        self._cache: OrderedDict[str, tuple[Principal, float, KeyRecord]] = OrderedDict()
        self._cache_size = cache_size
        self._unknown: OrderedDict[str, tuple[Refusal, float]] = OrderedDict()
        """Well-formed keys the store did not know, for ``cache_ttl``: a flood of forged keys
        (a CRC is easy to compute) costs one store lookup per key per TTL, not per request."""
        self._store_error_logged = float("-inf")
        self.breaker = breaker or Breaker(self._monotonic)
        self.fail_open = fail_open
        self._parse = key_parser(prefixes)

    async def authenticate(self, credential: Credential, now: float) -> Principal | Refusal:
        if credential.kind is CredentialKind.API_KEY:
            return await self._api_key(credential.token)
        if self._jwt is None:
            return _NO_ISSUERS
        return await self._jwt.verify(credential.token, now)

    async def _api_key(self, token: str) -> Principal | Refusal:
        # entries hold the monotonic time they expire at: a hit is one call and one comparison
        clock = self._monotonic()
        hit = self._cache.get(token)
        if hit is not None:
            if clock < hit[1]:
                return hit[0]
            # expired, but kept until the store answers: requests arriving meanwhile still
            # find it (under fail_open, one the store fails for is believed; a deleted entry
            # would have made it a stranger); ``hit`` spares the HMAC if nothing changed
        else:
            miss = self._unknown.get(token)
            if miss is not None:
                if clock < miss[1]:
                    return miss[0]
                del self._unknown[token]
        parsed = self._parse(token)
        if parsed is None:
            return _BAD_CHECKSUM
        key_id, secret = parsed
        breaker = self.breaker
        try:
            if not breaker.allow():
                raise StoreError("get_key", "the store is failing (circuit open)")
            record = await self.store.get_key(key_id)
        except StoreError as exc:
            if breaker.allow():  # a real call failed (not the open breaker refusing one)
                breaker.failure()
            self._log_store_error(exc, clock)
            if self.fail_open and hit is not None:
                # fail_open: a key verified before stays believed (a revoke made during the
                # outage is seen when the store answers again)
                _insert(self._cache, self._cache_size, token, (hit[0], clock + self._ttl,
                                                               hit[2]), clock)
                return hit[0]
            return Refusal(reasons.STORE_UNAVAILABLE, key_id, exc.operation)
        breaker.success()
        if record is None:
            return self._refuse_unknown(token, Refusal(reasons.KEY_UNKNOWN, key_id,
                                                       "no such key id"), clock)
        if hit is not None and hit[2] == record:
            principal = hit[0]  # unchanged since it was verified: no HMAC, no recompiling
        elif hmac.compare_digest(hash_secret(self._pepper, key_id, secret), record.secret_hash):
            principal = principal_for(record)
        else:
            return self._refuse_unknown(token, Refusal(reasons.KEY_UNKNOWN, key_id,
                                                       "secret does not match"), clock)
        _insert(self._cache, self._cache_size, token, (principal, clock + self._ttl, record),
                clock)
        return principal

    def forget(self, key_id: str | None) -> None:
        """Drop what is cached about ``key_id`` (None: about every key), so its next request
        reads the store again: for a change pushed by the store (a revoke, a limit change)
        instead of waiting out ``cache_ttl``. A scan, but changes are rare."""
        if key_id is None:
            # every entry is read from the store again on its next use, but stays known: under
            # on_store_error: fail_open a key verified before is still believed if the store
            # fails then (all entries now expire at 0: the cache stays ordered by expiry)
            for token, (principal, _, record) in self._cache.items():
                self._cache[token] = (principal, 0.0, record)
            self._unknown.clear()
            return
        for token in [t for t, hit in self._cache.items() if hit[2].key_id == key_id]:
            del self._cache[token]
        for token in [t for t, miss in self._unknown.items() if miss[0].key_id == key_id]:
            del self._unknown[token]

    async def aclose(self) -> None:
        if self._jwt is not None:
            await self._jwt.aclose()

    def trusted_for(self, credential: Credential) -> float:
        """Seconds this process may go on trusting ``credential``'s verification without asking
        again: what a decision built on it may be reused for (never past ``cache_ttl``)."""
        if credential.kind is CredentialKind.JWT:
            return self._ttl  # the verifier re-checks its cached token and key document
        hit = self._cache.get(credential.token)
        left = 0.0 if hit is None else hit[1] - self._monotonic()
        return left if left > 0.0 else 0.0

    def _refuse_unknown(self, token: str, refusal: Refusal, clock: float) -> Refusal:
        self._cache.pop(token, None)
        _insert(self._unknown, self._cache_size, token, (refusal, clock + self._ttl), clock)
        return refusal

    def _log_store_error(self, exc: StoreError, clock: float) -> None:
        if clock - self._store_error_logged >= _STORE_LOG_INTERVAL:
            self._store_error_logged = clock
            rule = "keys verified before stay believed (fail_open)" if self.fail_open else \
                "refusing uncached keys (fail_closed)"
            log.error("key store unavailable, %s: %s", rule, exc)


def _insert(cache: OrderedDict[str, Any], size: int, token: str, entry: tuple[Any, ...],
            clock: float) -> None:
    """Add ``entry`` (expiring at ``entry[1]``) as the newest. Every entry has the same TTL, so
    the oldest is at the front: first to expire, first to evict. O(1): ``popitem(last=False)``
    never scans, where ``del d[next(iter(d))]`` on a dict walks the slots deletions left."""
    cache.pop(token, None)
    for _ in range(_PURGE_PER_INSERT):
        if not cache or next(iter(cache.values()))[1] > clock:
            break
        cache.popitem(last=False)
    if cache and len(cache) >= size:
        cache.popitem(last=False)
    cache[token] = entry
