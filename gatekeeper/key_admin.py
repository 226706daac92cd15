"""Issuing, revoking and rotating keys: what the CLI and the demo do to the store.

Each function validates its input against the policy first, so a key can never be created
for a tenant or a network the policy would refuse anyway.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gatekeeper.errors import ConfigError, KeyConflictError, KeyNotFoundError, KeyRevokedError
from gatekeeper.keys import BODY_LEN, PREFIX, KeyRecord, looks_like_key_id, new_key
from gatekeeper.limits.overrides import apply_flags, flag_for, shown, widenings
from gatekeeper.networks import parse_network
from gatekeeper.policy.geo import country_problem
from gatekeeper.policy.limits import load_key_limits
from gatekeeper.policy.model import Policy
from gatekeeper.principal import KeyStatus
from gatekeeper.store.base import Store

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_DURATION = 3650 * 86400.0
"""Ten years: the longest expiry or grace period. Anything longer is a typo, or an attack on
the tools that print dates (a 400-digit expiry used to be stored as Infinity)."""


def parse_duration(text: str, field: str = "duration", minimum: float = 1.0) -> float:
    """'90s', '15m', '12h', '30d', '2w' or plain seconds, from ``minimum`` to ten years."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not match:
        raise ConfigError(field, text, "is not a duration (e.g. 90s, 15m, 12h, 30d)")
    return check_duration(float(match.group(1)) * _UNITS[match.group(2)], field, minimum,
                          shown=text)


def check_duration(seconds: float, field: str, minimum: float = 1.0,
                   shown: object = None) -> float:
    """``seconds`` if it is from ``minimum`` to ten years, else a ConfigError naming ``field``
    (and showing ``shown``, the text it came from, when given)."""
    if seconds != seconds:
        problem = "is not a number"
    elif seconds > MAX_DURATION:
        problem = "must be at most 10 years (3650d)"
    elif seconds < minimum:
        problem = f"must be at least {minimum:g} second{'s' if minimum != 1 else ''}"
    else:
        return seconds
    raise ConfigError(field, seconds if shown is None else shown, problem)


def _networks(networks: Sequence[str]) -> tuple[str, ...]:
    out = []
    for i, text in enumerate(networks):
        try:
            out.append(str(parse_network(text)))
        except ValueError:
            raise ConfigError(f"networks[{i}]", text, "is not a network") from None
    return tuple(out)


def parse_countries(texts: Sequence[str], field: str = "--country") -> tuple[str, ...]:
    """``["DE,FR", "it"]`` -> ``("DE", "FR", "IT")``, checked as the policy checks codes;
    ``none`` (alone) is the empty tuple: the key keeps only its tenant's rule."""
    items = [part.strip() for text in texts for part in text.split(",")]
    if [item.lower() for item in items] == ["none"]:
        return ()
    codes: list[str] = []
    for i, item in enumerate(items):
        problem = country_problem(item)
        if problem is not None:
            raise ConfigError(f"{field}[{i}]", item, problem if item else "is empty")
        if item.upper() not in codes:
            codes.append(item.upper())
    return tuple(codes)


def check_key_id(key_id: str) -> str:
    if looks_like_key_id(key_id):
        return key_id
    full = len(key_id) > BODY_LEN and "_" in key_id[:-BODY_LEN]  # a prefix: a full key
    hint = " (pass the 12-character key id, not the full key)" if full else ""
    raise ConfigError("key_id", key_id[:15] + ("..." if len(key_id) > 15 else ""),
                      f"is not a key id{hint}")


async def create_key(store: Store, pepper: bytes, policy: Policy, tenant: str, now: float, *,
                     networks: Sequence[str] = (), expires_at: float | None = None,
                     labels: Mapping[str, str] | None = None,
                     limits: Mapping[str, Any] | None = None,
                     countries: Sequence[str] = ()) -> tuple[str, KeyRecord]:
    """Issue a key under the policy's ``keys.prefix``. Returns the full key (show it once,
    never store it) and its record.
    ``limits``: the key's own limits as stored (``overrides.apply_flags``); ``countries``:
    codes from ``parse_countries``; both only narrow the tenant's rules."""
    if tenant not in policy.tenants:
        raise ConfigError("tenant", tenant, f"is not a tenant in {policy.source}")
    if limits:
        check_key_limits(policy, tenant, limits)
    if expires_at is not None:
        if expires_at <= now:
            raise ConfigError("expires_at", expires_at, "is in the past")
        check_duration(expires_at - now, "expires_at", 0.0, expires_at)
    key, record = new_key(pepper, tenant, now, allowed_networks=_networks(networks),
                          expires_at=expires_at, labels=labels, limits=limits,
                          countries=parse_countries(countries, "countries"),
                          prefix=policy.keys.prefix)
    await store.create_key(record)
    return key, record


async def get_key(store: Store, key_id: str) -> KeyRecord:
    record = await store.get_key(check_key_id(key_id))
    if record is None:
        raise KeyNotFoundError(key_id)
    return record


async def set_status(store: Store, key_id: str, status: KeyStatus, now: float) -> KeyRecord:
    def change(record: KeyRecord) -> KeyRecord:
        if record.status is KeyStatus.REVOKED and status is not KeyStatus.REVOKED:
            raise KeyRevokedError(record.key_id)
        return record.with_changes(status=status, updated_at=now)

    return (await _update(store, key_id, change))[1]


def check_key_limits(policy: Policy, tenant: str, limits: Mapping[str, Any]) -> None:
    """Refuse a key limit looser than its tenant's, naming the option that set it: a key can
    only narrow. (The policy may still change later: enforcement clamps anyway.)"""
    key = load_key_limits(limits)
    found = policy.tenants.get(tenant)
    if found is None:
        return
    for field, mine, theirs in widenings(found.limits, key):
        raise ConfigError(flag_for(field), shown(field, mine),
                          f"would widen tenant {tenant}'s {field} limit ({shown(field, theirs)}"
                          "): a key's limits can only narrow its tenant's")


async def set_limits(store: Store, policy: Policy, key_id: str, given: dict[str, str | None],
                     now: float) -> KeyRecord:
    """Change a key's own limits: ``given`` maps each option (``rpm``, ``monthly_spend``...)
    to its text, ``none`` to clear it, or None to leave it as it is."""
    def change(record: KeyRecord) -> KeyRecord:
        if record.status is KeyStatus.REVOKED:
            raise KeyRevokedError(record.key_id)
        limits = apply_flags(dict(record.limits), given)
        check_key_limits(policy, record.tenant, limits)
        return record.with_changes(limits=limits, updated_at=now)

    return (await _update(store, key_id, change))[1]


async def set_countries(store: Store, key_id: str, countries: Sequence[str],
                        now: float) -> KeyRecord:
    """Bind a key to ``countries`` (empty: unbind it); takes effect within ``keys.cache_ttl``."""
    codes = parse_countries(countries, "countries") if countries else ()

    def change(record: KeyRecord) -> KeyRecord:
        return record.with_changes(countries=codes, updated_at=now)

    return (await _update(store, key_id, change))[1]


async def rotate_key(store: Store, pepper: bytes, key_id: str, now: float,
                     grace: float, prefix: str = PREFIX) -> tuple[str, KeyRecord, KeyRecord]:
    """A new key with the old one's tenant, networks, countries, expiry, labels and limits;
    the old one keeps working for ``grace`` seconds so clients can switch without an outage.
    (The new key has its own counters: a per-key quota starts afresh, a ``per_tenant`` one does
    not.) The new key carries ``prefix`` (the policy's ``keys.prefix``), whatever the old one's.

    The old key's grace period is written first (conditionally on the record read), then the
    new key: a rotation that loses a race with a revoke leaves no replacement behind, and one
    that fails after its first write can simply be run again.
    """
    check_duration(grace, "grace", 0.0)

    def change(old: KeyRecord) -> KeyRecord:
        if old.status is not KeyStatus.ACTIVE:
            raise ConfigError("key_id", key_id, f"is {old.status.value}; only active keys rotate")
        if old.expires_at is not None and old.expires_at <= now:
            # its replacement would inherit the expiry and be born dead
            raise ConfigError("key_id", key_id, "has expired; issue a new key instead")
        end = now + grace
        return old.with_changes(
            expires_at=end if old.expires_at is None else min(old.expires_at, end),
            updated_at=now)

    before, old = await _update(store, key_id, change)
    key, new = new_key(pepper, before.tenant, now, allowed_networks=before.allowed_networks,
                       expires_at=before.expires_at, labels=before.labels,
                       rotated_from=before.key_id, limits=before.limits,
                       countries=before.countries, prefix=prefix)
    await store.create_key(new)
    return key, new, old


_ATTEMPTS = 5


async def _update(store: Store, key_id: str,
                  change: Callable[[KeyRecord], KeyRecord]) -> tuple[KeyRecord, KeyRecord]:
    """Read, check and change a record, and write it only if nobody wrote in between; when
    someone did, read it again and check again (their write may have been a revoke).
    Returns the record as read and as written."""
    attempts = _ATTEMPTS
    while True:
        record = await get_key(store, key_id)
        try:
            return record, await store.update_key(change(record), record.version)
        except KeyConflictError:
            attempts -= 1
            if not attempts:
                raise
