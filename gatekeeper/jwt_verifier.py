"""Bearer JWTs to Principals: PyJWT checks the signature, gatekeeper checks everything else.

The issuer is chosen by the token's ``iss`` before any key is touched, and the token's
``alg`` must be one that issuer pins: ``none`` and HS/RS confusion never reach a key. Time
claims are checked against the caller's ``now`` (not the wall clock) so ``replay`` and the
tests decide exactly as the middleware does. A verified token is cached until it expires or
its key leaves its issuer's JWKS, so the hot path verifies each token once. ``verify`` never
raises: every failure is a Refusal.

A JWKS URL is fetched by a background task, one per issuer at a time. A token whose key is
known never waits for the IdP, even while its document is stale and being refreshed; only a
token with an unknown ``kid`` waits, at most JWKS_FETCH_DEADLINE. Failed fetches back off.
Fetch intervals are measured on the monotonic clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, NamedTuple, TypeGuard
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import jwt

from gatekeeper import reasons
from gatekeeper.clock import Clock, SystemClock
from gatekeeper.errors import ConfigError
from gatekeeper.policy.issuers import MIN_HMAC_SECRET_BYTES, IssuerPolicy, PublicKey, jwks_keys
from gatekeeper.policy.model import TENANT_NAME
from gatekeeper.principal import CredentialKind, Principal
from gatekeeper.reasons import Refusal

log = logging.getLogger("gatekeeper")

JWKS_REFETCH_INTERVAL = 30.0
"""After a fetch, an unknown ``kid`` refetches at most this often: garbage tokens cannot flood
the IdP."""
JWKS_FETCH_DEADLINE = 2.5
"""For a whole fetch (connect, headers, body): the longest a token with an unknown kid waits."""
JWKS_BACKOFF_FIRST = 1.0
JWKS_BACKOFF_MAX = 60.0
"""After a failed fetch, the next waits JWKS_BACKOFF_FIRST, doubling per failure up to this."""
JWKS_MAX_BYTES = 1 << 20
FetchJwks = Callable[[str], Awaitable[bytes]]

_PYJWT_OPTIONS: Any = {
    "verify_signature": True, "verify_aud": True, "verify_iss": True,
    "verify_exp": False, "verify_nbf": False, "verify_iat": False,  # checked against `now`
    "require": ["exp", "iss", "aud"],
}


def _invalid(detail: str) -> Refusal:
    return Refusal(reasons.TOKEN_INVALID, detail=detail)


class _Keys:
    """One issuer's verification keys, with the JWKS refresh state when they come from a URL.
    Its times are monotonic."""

    def __init__(self, issuer: IssuerPolicy, secret: bytes | None) -> None:
        self.issuer = issuer
        self.secret = secret
        self.by_kid: dict[str | None, PublicKey] = dict(issuer.keys)
        self.remote = issuer.jwks_url is not None
        self.fresh_until = float("-inf")
        self.retry_at = float("-inf")
        """No fetch starts before this: the refetch interval, or the back-off after a failure."""
        self.backoff = JWKS_BACKOFF_FIRST
        self.failure: Refusal | None = None
        """Why the last fetch failed (None after a success): what a token without a key gets."""
        self.refreshing: anyio.Event | None = None
        """Set when the fetch in flight ends; None while none is."""

    def pick(self, kid: object) -> PublicKey | bytes | None:
        if self.secret is not None:
            return self.secret
        if kid is None and len(self.by_kid) == 1:
            return next(iter(self.by_kid.values()))
        return self.by_kid.get(kid) if isinstance(kid, str) or kid is None else None


class _Verified(NamedTuple):
    """A cached token: its principal, and the issuer key that verified it."""

    principal: Principal
    expires_at: float
    """Wall time, as ``exp`` is."""
    keys: _Keys
    kid: str | None
    key: PublicKey | bytes


class JwtVerifier:
    def __init__(self, issuers: Sequence[IssuerPolicy], *, cache_size: int = 100_000,
                 fetch_jwks: FetchJwks | None = None,
                 environ: Mapping[str, str] | None = None, clock: Clock | None = None) -> None:
        env = os.environ if environ is None else environ
        self._keys = {i.issuer: _Keys(i, _secret(i, env)) for i in issuers}
        self._fetch = fetch_jwks or fetch_url
        self.clock = clock or SystemClock()
        self._cache: OrderedDict[str, _Verified] = OrderedDict()
        self._cache_size = cache_size
        self._refreshes: set[asyncio.Task[None]] = set()
        """The background fetches running (the event loop itself holds tasks weakly)."""
        self.verifications = 0
        """Signature checks done (cache misses): how the tests see that the cache works."""

    async def verify(self, token: str, now: float) -> Principal | Refusal:
        hit = self._cache.get(token)
        if hit is not None:
            if now < hit.expires_at and hit.keys.pick(hit.kid) is hit.key:
                if hit.keys.remote:
                    self._refresh_if_stale(hit.keys)
                return hit.principal
            del self._cache[token]  # expired, or its key left the issuer's JWKS: verify again
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, options={"verify_signature": False})
        except (jwt.PyJWTError, ValueError, TypeError):
            return Refusal(reasons.CREDENTIAL_MALFORMED, detail="not a well-formed JWT")
        iss = claims.get("iss")
        keys = self._keys.get(iss) if isinstance(iss, str) else None
        if keys is None:
            return _invalid("unknown issuer")
        issuer = keys.issuer
        alg = header.get("alg")
        if alg not in issuer.algorithms:
            return _invalid(f"algorithm {str(alg)[:16]!r} is not allowed for {issuer.name}")
        kid = header.get("kid")
        key = keys.pick(kid)
        if keys.remote:
            if key is None:
                failed = await self._wait_for_refresh(keys)
                key = keys.pick(kid)
                if key is None and failed is not None:
                    return failed
            else:
                self._refresh_if_stale(keys)  # the known key serves meanwhile
        if key is None:
            return _invalid(f"unknown key id for {issuer.name}")
        try:
            self.verifications += 1
            claims = jwt.decode(token, key, algorithms=[alg], audience=list(issuer.audiences),
                                issuer=issuer.issuer, options=_PYJWT_OPTIONS)
        except jwt.InvalidAudienceError:
            return _invalid("wrong audience")
        except jwt.PyJWTError as exc:
            return _invalid(f"{type(exc).__name__}")
        result = _principal(issuer, claims, now)
        if isinstance(result, Principal):
            cache = self._cache
            if cache and len(cache) >= self._cache_size:
                cache.popitem(last=False)  # the oldest: O(1), unlike del d[next(iter(d))]
            cache[token] = _Verified(result, result.expires_at or 0.0, keys, kid, key)
        return result

    async def aclose(self) -> None:
        """Cancel background JWKS refreshes still running (a hung IdP must not hold shutdown)."""
        tasks = list(self._refreshes)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _refresh_if_stale(self, keys: _Keys) -> None:
        if self.clock.monotonic() >= keys.fresh_until:
            self._refresh_soon(keys)

    def _refresh_soon(self, keys: _Keys) -> anyio.Event | None:
        """Start the issuer's background fetch, unless one runs or the back-off holds; the
        event its end sets, or None when no fetch runs."""
        if keys.refreshing is None and self.clock.monotonic() >= keys.retry_at:
            keys.refreshing = anyio.Event()
            task = asyncio.get_running_loop().create_task(self._refresh(keys, keys.refreshing))
            self._refreshes.add(task)
            task.add_done_callback(self._refreshes.discard)
        return keys.refreshing

    async def _wait_for_refresh(self, keys: _Keys) -> Refusal | None:
        """For a token whose kid is unknown: wait for a fetch, at most JWKS_FETCH_DEADLINE."""
        done = self._refresh_soon(keys)
        if done is not None:
            with anyio.move_on_after(JWKS_FETCH_DEADLINE):
                await done.wait()
            if not done.is_set():
                return Refusal(reasons.AUTH_UNAVAILABLE,
                               detail=f"JWKS for {keys.issuer.name} did not answer in time")
        return keys.failure  # an unreachable IdP stays auth_unavailable, not invalid

    async def _refresh(self, keys: _Keys, done: anyio.Event) -> None:
        """The one fetch in flight for an issuer: new keys, or the next back-off step."""
        issuer = keys.issuer
        try:
            found, problem = await self._fetch_keys(issuer)
            clock = self.clock.monotonic()
            if found:
                # a key that is still there stays the same object: its cached tokens stay valid
                old = keys.by_kid
                keys.by_kid = {kid: old[kid] if old.get(kid) == key else key
                               for kid, key in found.items()}
                keys.fresh_until = clock + issuer.jwks_cache_ttl
                keys.retry_at = clock + JWKS_REFETCH_INTERVAL
                keys.backoff = JWKS_BACKOFF_FIRST
                keys.failure = None
            else:
                keys.retry_at = clock + keys.backoff
                keys.backoff = min(keys.backoff * 2, JWKS_BACKOFF_MAX)
                keys.failure = Refusal(reasons.AUTH_UNAVAILABLE,
                                       detail=f"JWKS for {issuer.name} {problem}")
        finally:
            keys.refreshing = None
            done.set()

    async def _fetch_keys(self, issuer: IssuerPolicy) -> tuple[dict[str | None, PublicKey], str]:
        try:
            with anyio.fail_after(JWKS_FETCH_DEADLINE):
                body = await self._fetch(issuer.jwks_url or "")
            document = json.loads(body)
        except Exception as exc:
            log.warning("JWKS fetch for issuer %s failed: %s", issuer.name, type(exc).__name__)
            return {}, "unavailable"
        found, problems = jwks_keys(document, issuer.family)
        for problem in problems:
            log.warning("JWKS for issuer %s: %s", issuer.name, problem)
        return found, "has no keys"


def _principal(issuer: IssuerPolicy, claims: Mapping[str, Any], now: float) -> Principal | Refusal:
    exp = claims.get("exp")
    if not _is_time(exp):
        return _invalid("exp is not a time")
    if now >= exp + issuer.leeway:
        return Refusal(reasons.TOKEN_EXPIRED, detail=f"issuer {issuer.name}")
    for name in ("nbf", "iat"):
        value = claims.get(name)
        if value is None:
            continue
        if not _is_time(value):
            return _invalid(f"{name} is not a time")
        if value > now + issuer.leeway:
            return _invalid(f"{name} is in the future")
    subject = claims.get(issuer.subject_claim)
    if not isinstance(subject, str) or not subject or len(subject) > 256:
        return _invalid(f"claim {issuer.subject_claim!r} is missing or not a string")
    tenant = claims.get(issuer.tenant_claim)
    if not isinstance(tenant, str) or not TENANT_NAME.fullmatch(tenant):
        return _invalid(f"claim {issuer.tenant_claim!r} is missing or not a tenant name")
    if issuer.tenants is not None and tenant not in issuer.tenants:
        return _invalid(f"issuer {issuer.name} may not name tenant {tenant!r}")
    return Principal(CredentialKind.JWT, f"jwt:{issuer.name}:{subject}", tenant,
                     expires_at=float(exp) + issuer.leeway)


_MAX_TIME = 253_402_300_799
"""9999-12-31T23:59:59Z."""


def _is_time(value: Any) -> TypeGuard[float]:
    """Seconds no further from 1970 than the end of year 9999, checked before any arithmetic:
    an int like 10**400 overflows float, and NaN, Infinity or 1e300 in ``exp`` never expire."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        -_MAX_TIME <= value <= _MAX_TIME


_HMAC_KEY_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}


def _secret(issuer: IssuerPolicy, env: Mapping[str, str]) -> bytes | None:
    if issuer.secret_env is None:
        return None
    value = env.get(issuer.secret_env, "")
    field = f"{issuer.field}.secret_env"
    if not value:
        raise ConfigError(field, issuer.secret_env, "names an environment variable that is not set")
    # RFC 7518 3.2: an HMAC key at least as long as the hash (PyJWT warns on every token if not)
    need = max([MIN_HMAC_SECRET_BYTES, *(_HMAC_KEY_BYTES.get(a, 0) for a in issuer.algorithms)])
    if len(value.encode()) < need:
        raise ConfigError(field, issuer.secret_env,
                          f"holds a secret of {len(value.encode())} bytes; at least "
                          f"{need} are required")
    return value.encode()


async def fetch_url(url: str, headers: Mapping[str, str] | None = None) -> bytes:
    """GET a JWKS document (or another small JSON one: GitHub's signing keys) off the event
    loop: no redirects, no proxies, at most JWKS_MAX_BYTES; ``headers`` are added.

    The thread checks a deadline between reads, and is abandoned when the caller's deadline
    passes: the connection is then shut down, which wakes a read blocked on a hung server.
    """
    parts = urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = kind(parts.hostname or "", parts.port, timeout=JWKS_FETCH_DEADLINE)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    deadline = time.monotonic() + JWKS_FETCH_DEADLINE
    try:
        return await anyio.to_thread.run_sync(_get, connection, target, deadline,
                                              dict(headers or {}), abandon_on_cancel=True)
    finally:
        sock = connection.sock
        if sock is not None:  # still open: the thread was abandoned at the caller's deadline
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _get(connection: http.client.HTTPConnection, target: str, deadline: float,
         headers: dict[str, str]) -> bytes:
    try:
        connection.request("GET", target, headers={"accept": "application/json", **headers})
        with connection.getresponse() as response:
            if response.status != 200:
                raise OSError(f"HTTP {response.status}")  # a redirect too: it could leave https
            body = bytearray()
            while chunk := response.read1(1 << 16):
                body += chunk
                if len(body) > JWKS_MAX_BYTES:
                    raise ValueError("JWKS document too large")
                if time.monotonic() > deadline:
                    raise TimeoutError("JWKS fetch deadline passed")
            return bytes(body)
    finally:
        connection.close()
