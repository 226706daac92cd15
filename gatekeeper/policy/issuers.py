"""The ``jwt.issuers`` section: which token issuers are trusted, pinned to one key family each.

Every issuer names its algorithms and exactly one source of keys. Pinning the algorithm list
per issuer, and refusing lists that mix key families, is what rules out ``alg: none`` and
HS/RS confusion (a public RSA key replayed as an HMAC secret) before any token arrives.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from gatekeeper.errors import ConfigError
from gatekeeper.policy.fields import Fields

FAMILIES: Mapping[str, str] = {
    "HS256": "HMAC", "HS384": "HMAC", "HS512": "HMAC",
    "RS256": "RSA", "RS384": "RSA", "RS512": "RSA",
    "PS256": "RSA", "PS384": "RSA", "PS512": "RSA",
    "ES256": "EC", "ES384": "EC", "ES512": "EC",
    "EdDSA": "OKP",
}
"""Allowed algorithms by key family; ``none`` is deliberately absent."""

_KEY_TYPES: Mapping[str, tuple[type, ...]] = {
    "RSA": (rsa.RSAPublicKey,),
    "EC": (ec.EllipticCurvePublicKey,),
    "OKP": (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey),
}
MIN_RSA_BITS = 2048
MIN_HMAC_SECRET_BYTES = 32
KEY_SOURCES = ("jwks_url", "jwks_file", "jwks", "public_keys", "secret_env")

PublicKey = Any
"""A ``cryptography`` public key object, as PyJWT accepts it."""


@dataclass(frozen=True, slots=True)
class IssuerPolicy:
    name: str
    issuer: str
    """The exact ``iss`` claim this issuer signs with."""
    audiences: tuple[str, ...]
    algorithms: tuple[str, ...]
    family: str
    keys: Mapping[str | None, PublicKey] = field(default_factory=dict)
    """Static public keys by ``kid`` (None: a key without one)."""
    jwks_url: str | None = None
    jwks_cache_ttl: float = 600.0
    secret_env: str | None = None
    """For HMAC issuers: the environment variable holding the shared secret (never the policy)."""
    tenant_claim: str = "tenant"
    subject_claim: str = "sub"
    leeway: float = 30.0
    tenants: tuple[str, ...] | None = None
    """The tenants this issuer may name; None: any tenant in the policy (one shared IdP)."""

    @property
    def field(self) -> str:
        return f"jwt.issuers.{self.name}"


def load_issuers(section: Fields) -> tuple[IssuerPolicy, ...]:
    issuers = [_issuer(name, fields) for name, fields in section.entries("issuers")]
    section.finish()
    seen: dict[str, str] = {}
    for found in issuers:
        if found is None:
            continue
        if found.issuer in seen:
            section.errors.append(ConfigError(f"{found.field}.issuer", found.issuer,
                                              f"is already the issuer of {seen[found.issuer]}"))
        seen[found.issuer] = found.name
    return tuple(i for i in issuers if i is not None)


def _issuer(name: str, f: Fields) -> IssuerPolicy | None:
    before = len(f.errors)
    issuer = f.get("issuer", str)
    audiences = tuple(f.str_list("audiences"))
    if not audiences:
        f.error("audiences", [], "must name at least one audience (tokens for other services "
                                 "must not be accepted here)")
    algorithms = tuple(f.str_list("algorithms"))
    families = set()
    for i, alg in enumerate(algorithms):
        if alg not in FAMILIES:
            problem = ("is never allowed" if alg.lower() == "none"
                       else f"is not a supported algorithm ({', '.join(FAMILIES)})")
            f.error(f"algorithms[{i}]", alg, problem)
        else:
            families.add(FAMILIES[alg])
    if not algorithms:
        f.error("algorithms", [], "must list at least one algorithm")
    if len(families) > 1:
        f.error("algorithms", list(algorithms),
                "mixes key families; an issuer is pinned to one (HMAC, RSA, EC or OKP)")
    family = families.pop() if len(families) == 1 else ""

    sources = [s for s in KEY_SOURCES if f.has(s)]
    if len(sources) != 1:
        f.error_here(sources, f"must give exactly one key source: {', '.join(KEY_SOURCES)}")
    keys: dict[str | None, PublicKey] = {}
    jwks_url = secret_env = None
    if "secret_env" in sources:
        secret_env = f.get("secret_env", str)
        if family and family != "HMAC":
            f.error("secret_env", secret_env,
                    f"is a shared secret, but the algorithms are {family}")
    elif family == "HMAC" and sources:
        f.error("algorithms", list(algorithms),
                "are HMAC, which needs secret_env (a shared secret, not public keys)")
    if "jwks_url" in sources:
        jwks_url = f.get("jwks_url", str)
        if jwks_url is not None and not _fetchable(jwks_url):
            f.error("jwks_url", jwks_url, "must be an https URL (http only on loopback)")
    if "jwks_file" in sources:
        path = f.get("jwks_file", str)
        if path is not None:
            try:
                document = json.loads(Path(path).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                f.error("jwks_file", path, f"cannot be read as JSON: {type(exc).__name__}")
            else:
                keys = _jwks_keys(document, family, f, "jwks_file")
    if "jwks" in sources:
        keys = _jwks_keys(f.get("jwks", dict), family, f, "jwks")
    if "public_keys" in sources:
        keys = _pem_keys(f.section("public_keys"), family)
    cache_ttl = f.number("jwks_cache_ttl", 600.0, 30.0, 86_400.0)
    tenant_claim = f.get("tenant_claim", str, "tenant")
    subject_claim = f.get("subject_claim", str, "sub")
    leeway = f.number("leeway", 30.0, 0.0, 300.0)
    tenants = tuple(f.str_list("tenants")) if f.has("tenants") else None
    if tenants is not None and not tenants:
        f.error("tenants", [], "must name at least one tenant (leave it out to allow any)")
    f.finish()
    if len(f.errors) > before:
        return None
    return IssuerPolicy(name, issuer, audiences, algorithms, family, keys, jwks_url, cache_ttl,
                        secret_env, tenant_claim, subject_claim, leeway, tenants)


def _fetchable(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return True
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")


def jwks_keys(document: object, family: str) -> tuple[dict[str | None, PublicKey], list[str]]:
    """Public keys of ``family`` from a JWKS document, and the problems with the rest."""
    problems: list[str] = []
    keys: dict[str | None, PublicKey] = {}
    items = document.get("keys") if isinstance(document, Mapping) else None
    if not isinstance(items, list):
        return keys, ["keys: must be a list of JWKs"]
    for i, item in enumerate(items):
        if isinstance(item, Mapping) and item.get("use") == "enc":
            continue  # encryption keys share JWKS documents; they never sign
        try:
            jwk = jwt.PyJWK(dict(item) if isinstance(item, Mapping) else item)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
            problems.append(f"keys[{i}]: is not a usable JWK ({_brief(exc)})")
            continue
        problem = check_public_key(jwk.key, family)
        if problem:
            problems.append(f"keys[{i}]: {problem}")
            continue
        keys[jwk.key_id] = jwk.key
    if not keys and not problems:
        problems.append("keys: holds no signing key")
    return keys, problems


def check_public_key(key: object, family: str) -> str:
    """Why ``key`` may not verify tokens of ``family``; empty when it may."""
    if family not in _KEY_TYPES:
        return "is not a public key (symmetric secrets belong in secret_env)"
    if not isinstance(key, _KEY_TYPES[family]):
        return f"is not a {family} public key (the issuer's algorithms are {family})"
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        return f"is an RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} are required"
    return ""


def _jwks_keys(document: object, family: str, f: Fields, name: str) -> dict[str | None, Any]:
    keys, problems = jwks_keys(document, family) if family else ({}, [])
    for problem in problems:
        where, _, text = problem.partition(": ")
        f.error(f"{name}.{where}", "(key)", text)
    return keys


def _pem_keys(section: Fields, family: str) -> dict[str | None, PublicKey]:
    keys: dict[str | None, PublicKey] = {}
    before = len(section.errors)
    for kid, entry in section.items():
        if not isinstance(entry, str):
            section.error(kid, entry, "must be a PEM public key")
            continue
        if "PRIVATE KEY" in entry:
            # never echo it: this is a private key pasted where a public one belongs
            section.error(kid, "(private key)", "is a private key; give the public key only")
            continue
        try:
            key = serialization.load_pem_public_key(entry.encode())
        except (ValueError, TypeError) as exc:
            section.error(kid, "(PEM)", f"is not a PEM public key ({_brief(exc)})")
            continue
        problem = check_public_key(key, family) if family else ""
        if problem:
            section.error(kid, "(PEM)", problem)
            continue
        keys[kid] = key
    if not keys and len(section.errors) == before:
        section.error_here({}, "must hold at least one key")
    return keys


def _brief(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
