"""API keys built for leak detection, after GitHub's token format.

A prefix (``gk_`` unless the policy's ``keys.prefix`` says otherwise) + 12-char key id +
32-char secret + 6-char CRC32, all base62: 53 characters with the default prefix, that a secret
scanner finds with ``gk_[0-9A-Za-z]{50}`` and that a typo or a guessed string fails at the
checksum, before any HMAC or store lookup. The checksum covers the prefix too, so a key cannot
be moved to another deployment's prefix. The store keeps only HMAC-SHA256(pepper, key id +
secret); the pepper lives outside the store.
"""

from __future__ import annotations

import hmac
import re
import secrets
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from gatekeeper.geo.rules import DENY, CountryRule
from gatekeeper.principal import CredentialKind, KeyStatus, Principal

PREFIX = "gk_"
"""The default prefix; a deployment sets its own with ``keys.prefix``."""
PREFIXES = (PREFIX,)
"""The prefixes a default deployment accepts."""
ID_LEN = 12
SECRET_LEN = 32
CRC_LEN = 6
BODY_LEN = ID_LEN + SECRET_LEN + CRC_LEN
"""What follows the prefix: 50 base62 characters."""
KEY_LEN = len(PREFIX) + BODY_LEN
PREFIX_RULE = re.compile(r"[a-z0-9][a-z0-9_]{1,14}_")
"""3 to 16 characters of ``[a-z0-9_]`` ending in ``_``: never a base62 digit run, never a dot
(a JWT has two), and short enough that keys stay short."""


def key_pattern(prefix: str = PREFIX) -> str:
    """The regex to register with secret scanners for keys issued under ``prefix``."""
    return rf"\b{re.escape(prefix)}[0-9A-Za-z]{{{BODY_LEN}}}\b"


KEY_PATTERN = key_pattern(PREFIX)
"""The regex to register with secret scanners (default prefix; ``key_pattern`` for others)."""


def prefix_problem(prefix: str) -> str | None:
    """Why ``prefix`` cannot be a key prefix, or None."""
    if PREFIX_RULE.fullmatch(prefix):
        return None
    return "must be 3 to 16 characters of a-z, 0-9 and _, ending in _ (e.g. acme_)"


ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
MIN_PEPPER_BYTES = 32


_PAIRS = [a + b for a in ALPHABET for b in ALPHABET]  # base62 two digits at a time
_PAIR = 62 * 62


def _checksum(body: str) -> str:
    """CRC32 as six base62 digits (62**6 > 2**32), three table lookups instead of a loop."""
    high, low = divmod(zlib.crc32(body.encode()), _PAIR)
    high, mid = divmod(high, _PAIR)
    return _PAIRS[high] + _PAIRS[mid] + _PAIRS[low]


def _random(n: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(n))


def new_key_id() -> str:
    return _random(ID_LEN)


def build_key(key_id: str, secret: str, prefix: str = PREFIX) -> str:
    body = prefix + key_id + secret
    return body + _checksum(body)


def parse_key(token: str, prefixes: tuple[str, ...] = PREFIXES) -> tuple[str, str] | None:
    """(key id, secret) if ``token`` is one of our keys under one of ``prefixes`` (the
    policy's ``keys.prefix`` and ``keys.accepted_prefixes``) with a valid checksum, else None.
    (``key_parser`` makes the same check with the offsets computed once.)"""
    return (_parse_default if prefixes == PREFIXES else key_parser(prefixes))(token)


def key_parser(prefixes: tuple[str, ...] = PREFIXES) -> Callable[[str], tuple[str, str] | None]:
    """``parse_key`` for one set of prefixes, each prefix's offsets computed once: for one
    prefix (the default) the same work as with a fixed ``gk_``."""
    if len(prefixes) == 1:
        return _parser_for(prefixes[0])
    parsers = tuple(_parser_for(prefix) for prefix in prefixes)

    def parse(token: str) -> tuple[str, str] | None:
        for parse_one in parsers:
            found = parse_one(token)
            if found is not None:
                return found
        return None

    return parse


def _parser_for(prefix: str) -> Callable[[str], tuple[str, str] | None]:
    start = len(prefix)
    key_len, id_end = start + BODY_LEN, start + ID_LEN
    secret_end = id_end + SECRET_LEN

    def parse(token: str) -> tuple[str, str] | None:
        if len(token) != key_len or not token.startswith(prefix):
            return None
        rest = token[start:]
        if not (rest.isascii() and rest.isalnum()):
            return None
        if _checksum(token[:secret_end]) != token[secret_end:]:
            return None
        return token[start:id_end], token[id_end:secret_end]

    return parse


_parse_default = _parser_for(PREFIX)


def looks_like_key_id(text: str) -> bool:
    return len(text) == ID_LEN and text.isascii() and text.isalnum()


def hash_secret(pepper: bytes, key_id: str, secret: str) -> bytes:
    """HMAC-SHA256 over id and secret: a stolen store dump is useless without the pepper."""
    return hmac.digest(pepper, f"{key_id}:{secret}".encode(), "sha256")


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What the store holds for a key: no secret, only its peppered hash."""

    key_id: str
    tenant: str
    secret_hash: bytes = field(repr=False)
    status: KeyStatus = KeyStatus.ACTIVE
    allowed_networks: tuple[str, ...] = ()
    created_at: float = 0.0
    expires_at: float | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    rotated_from: str | None = None
    updated_at: float = 0.0
    version: int = 0
    """Bumped by the store on every update: writes are conditional on the version read."""
    limits: Mapping[str, Any] = field(default_factory=dict)
    """The key's own limits, as policy fields (``{"requests": "60/minute", "monthly_spend":
    200}``): they only narrow its tenant's (``limits/overrides.py``). Empty: the tenant's."""
    countries: tuple[str, ...] = ()
    """ISO codes the key may be used from (``--country DE,FR``); empty: the tenant's rule
    alone applies. Records written before this field read as empty."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id, "tenant": self.tenant, "secret_hash": self.secret_hash.hex(),
            "status": self.status.value, "allowed_networks": list(self.allowed_networks),
            "created_at": self.created_at, "expires_at": self.expires_at,
            "labels": dict(self.labels), "rotated_from": self.rotated_from,
            "updated_at": self.updated_at, "version": self.version, "limits": dict(self.limits),
            "countries": list(self.countries),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> KeyRecord:
        return cls(
            key_id=str(data["key_id"]), tenant=str(data["tenant"]),
            secret_hash=bytes.fromhex(data["secret_hash"]),
            status=KeyStatus(data.get("status", "active")),
            allowed_networks=tuple(data.get("allowed_networks") or ()),
            created_at=float(data.get("created_at") or 0.0),
            expires_at=None if data.get("expires_at") is None else float(data["expires_at"]),
            labels={str(k): str(v) for k, v in (data.get("labels") or {}).items()},
            rotated_from=data.get("rotated_from"),
            updated_at=float(data.get("updated_at") or 0.0),
            version=int(data.get("version") or 0),  # records from before versions: 0
            limits=dict(data.get("limits") or {}),  # records from before key limits: none
            countries=tuple(str(c) for c in data.get("countries") or ()),
        )

    def with_changes(self, **changes: Any) -> KeyRecord:
        return replace(self, **changes)

    def public_view(self) -> dict[str, Any]:
        """What the CLI shows: everything but the hash."""
        view = self.to_dict()
        del view["secret_hash"]
        return view


def principal_for(record: KeyRecord) -> Principal:
    """Compile a record once per cache fill, so the hot path never re-parses its networks
    or its limits (a record whose limits do not load raises ``PolicyError``: the CLI wrote
    them validated, so that is a damaged record, refused rather than run unlimited)."""
    from gatekeeper.networks import NetworkSet
    from gatekeeper.policy.limits import load_key_limits

    return Principal(
        kind=CredentialKind.API_KEY, key_id=record.key_id, tenant=record.tenant,
        status=record.status, expires_at=record.expires_at,
        networks=NetworkSet.parse(record.allowed_networks), labels=record.labels,
        limits=load_key_limits(record.limits, f"key {record.key_id} limits")
        if record.limits else None,
        countries=key_country_rule(record.countries),
    )


def key_country_rule(countries: tuple[str, ...]) -> CountryRule | None:
    """A key's countries as a rule: only these pass, and an unknown location does not (a key
    bound to Germany is not known to be in Germany when nobody knows where it is)."""
    if not countries:
        return None
    return CountryRule(allow=frozenset(countries), unknown=DENY)


def new_key(pepper: bytes, tenant: str, now: float, *, allowed_networks: tuple[str, ...] = (),
            expires_at: float | None = None, labels: Mapping[str, str] | None = None,
            rotated_from: str | None = None,
            limits: Mapping[str, Any] | None = None,
            countries: tuple[str, ...] = (),
            prefix: str = PREFIX) -> tuple[str, KeyRecord]:
    """A fresh key (under ``prefix``) and its record. The key string is returned once and
    never stored; the record does not depend on the prefix."""
    key_id, secret = new_key_id(), _random(SECRET_LEN)
    record = KeyRecord(
        key_id=key_id, tenant=tenant, secret_hash=hash_secret(pepper, key_id, secret),
        allowed_networks=allowed_networks, created_at=now, expires_at=expires_at,
        labels=dict(labels or {}), rotated_from=rotated_from, updated_at=now,
        limits=dict(limits or {}),
        countries=countries,
    )
    return build_key(key_id, secret, prefix), record
