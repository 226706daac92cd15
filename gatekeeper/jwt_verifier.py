"""Bearer JWTs to Principals: PyJWT checks the signature, gatekeeper checks everything else.

The issuer is chosen by the token's ``iss`` before any key is touched, and the token's
``alg`` must be one that issuer pins: ``none`` and HS/RS confusion never reach a key. Time
claims are checked against the caller's ``now`` (not the wall clock) so ``replay`` and the
tests decide exactly as the middleware does. A verified token is cached until it expires, so
the hot path verifies each token once. ``verify`` never raises: every failure is a Refusal.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeGuard

import anyio
import anyio.to_thread
import jwt

from gatekeeper import reasons
from gatekeeper.errors import ConfigError
from gatekeeper.policy.issuers import MIN_HMAC_SECRET_BYTES, IssuerPolicy, PublicKey, jwks_keys
from gatekeeper.policy.model import TENANT_NAME
from gatekeeper.principal import CredentialKind, Principal
from gatekeeper.reasons import Refusal

log = logging.getLogger("gatekeeper")

JWKS_REFETCH_INTERVAL = 30.0
"""An unknown ``kid`` refetches the JWKS at most this often: garbage tokens cannot flood the IdP."""
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
    """One issuer's verification keys, with the JWKS refresh state when they come from a URL."""

    def __init__(self, issuer: IssuerPolicy, secret: bytes | None) -> None:
        self.issuer = issuer
        self.secret = secret
        self.by_kid: dict[str | None, PublicKey] = dict(issuer.keys)
        self.fetched_at = float("-inf")
        self.tried_at = float("-inf")
        self.failure: Refusal | None = None
        """Why the last fetch failed (None after a success): rate-limited retries answer it."""
        self.lock = anyio.Lock()

    def stale(self, now: float) -> bool:
        return now - self.fetched_at >= self.issuer.jwks_cache_ttl

    def pick(self, kid: object) -> PublicKey | bytes | None:
        if self.secret is not None:
            return self.secret
        if kid is None and len(self.by_kid) == 1:
            return next(iter(self.by_kid.values()))
        return self.by_kid.get(kid) if isinstance(kid, str) or kid is None else None


class JwtVerifier:
    def __init__(self, issuers: Sequence[IssuerPolicy], *, cache_size: int = 100_000,
                 fetch_jwks: FetchJwks | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._keys = {i.issuer: _Keys(i, _secret(i, env)) for i in issuers}
        self._fetch = fetch_jwks or fetch_url
        self._cache: dict[str, Principal] = {}
        self._cache_size = cache_size
        self.verifications = 0
        """Signature checks done (cache misses): how the tests see that the cache works."""

    async def verify(self, token: str, now: float) -> Principal | Refusal:
        hit = self._cache.get(token)
        if hit is not None:
            return hit  # expiry is the decision's job: a cached token still expires on time
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
        if issuer.jwks_url is not None and (key is None or keys.stale(now)):
            failed = await self._refresh(keys, now, kid)
            key = keys.pick(kid)
            if failed is not None and key is None:
                return failed  # with a known key the stale document still serves
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
            self._remember(token, result)
        return result

    def _remember(self, token: str, principal: Principal) -> None:
        cache = self._cache
        if len(cache) >= self._cache_size:
            del cache[next(iter(cache))]
        cache[token] = principal

    async def _refresh(self, keys: _Keys, now: float, kid: object) -> Refusal | None:
        """Fetch the issuer's JWKS, one fetch at a time and at most once per interval."""
        async with keys.lock:
            if keys.pick(kid) is not None and not keys.stale(now):
                return None  # another request fetched it while this one waited
            if now - keys.tried_at < JWKS_REFETCH_INTERVAL:
                return keys.failure  # an unreachable IdP stays auth_unavailable, not invalid
            keys.tried_at = now
            name, url = keys.issuer.name, keys.issuer.jwks_url
            try:
                document = json.loads(await self._fetch(url or ""))
            except Exception as exc:
                log.warning("JWKS fetch for issuer %s failed: %s", name, type(exc).__name__)
                keys.failure = Refusal(reasons.AUTH_UNAVAILABLE,
                                       detail=f"JWKS for {name} unavailable")
                return keys.failure
            found, problems = jwks_keys(document, keys.issuer.family)
            for problem in problems:
                log.warning("JWKS for issuer %s: %s", name, problem)
            if not found:
                keys.failure = Refusal(reasons.AUTH_UNAVAILABLE,
                                       detail=f"JWKS for {name} has no keys")
                return keys.failure
            if keys.by_kid.keys() - found.keys():
                self._drop_issuer(name)  # a retired signing key takes its cached tokens along
            keys.by_kid = found
            keys.fetched_at = now
            keys.failure = None
            return None

    def _drop_issuer(self, name: str) -> None:
        prefix = f"jwt:{name}:"
        for token in [t for t, p in self._cache.items() if p.key_id.startswith(prefix)]:
            del self._cache[token]


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


_HMAC_KEY_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}


_MAX_TIME = 253_402_300_799
"""9999-12-31T23:59:59Z."""


def _is_time(value: Any) -> TypeGuard[float]:
    """Seconds no further from 1970 than the end of year 9999, checked before any arithmetic:
    an int like 10**400 overflows float, and NaN, Infinity or 1e300 in ``exp`` never expire."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        -_MAX_TIME <= value <= _MAX_TIME


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


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect could lead an https JWKS URL to plain http: answer it as an error instead."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


# No proxies from the environment either: the JWKS URL in the policy is the one fetched.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)


async def fetch_url(url: str) -> bytes:
    """GET a JWKS document off the event loop, bounded in time and size."""
    def get() -> bytes:
        request = urllib.request.Request(url, headers={"accept": "application/json"})
        try:
            with _OPENER.open(request, timeout=5.0) as response:
                return bytes(response.read(JWKS_MAX_BYTES + 1))[:JWKS_MAX_BYTES]
        except urllib.error.HTTPError as exc:
            exc.close()  # an error response holds the connection open until closed
            raise
    return await anyio.to_thread.run_sync(get)

