"""Leaked keys: what a secret-scanning alert reports, what is done about each match, and the
audit line that says so.

An alert (GitHub's partner format) is a JSON array of ``{token, type, url, source}``. A match
is ours when it parses as a key under an accepted prefix (``parse_key``: format and checksum,
no store call) and its secret matches the stored hash; such a key is revoked, for good, and
written to the ``gatekeeper.audit`` logger as ``"event":"leaked"`` with its key id and where
it leaked, never the token. Everything else is a false positive, left untouched.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii as _quote
from typing import Any, NamedTuple

from gatekeeper.audit import AUDIT_LOGGER
from gatekeeper.key_admin import set_status
from gatekeeper.keys import hash_secret, parse_key
from gatekeeper.principal import KeyStatus
from gatekeeper.store.base import Store

TRUE_POSITIVE = "true_positive"
FALSE_POSITIVE = "false_positive"
MAX_TOKEN = 8192
_TEXT = 512
"""``type``, ``url`` and ``source`` are cut to this many characters in audit lines."""


class Match(NamedTuple):
    """One reported secret. ``url`` may be empty (GitHub's docs say so)."""

    token: str
    type: str
    url: str
    source: str


class Verdict(NamedTuple):
    match: Match
    label: str
    key_id: str | None = None
    """Set for our keys only (true positives)."""
    tenant: str | None = None
    newly_revoked: bool = False
    """False when the key was already revoked (a second report, or a retried alert)."""


def parse_alert(body: bytes) -> list[Match] | str:
    """The matches of an alert body, or what is wrong with it (for a 400)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return "body is not JSON"
    if not isinstance(data, list) or not data:
        return "body must be a non-empty JSON array of matches"
    matches = []
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            return f"match {i} is not an object"
        token = item.get("token")
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN:
            return f"match {i} has no token string"
        fields = [item.get(name, "") for name in ("type", "url", "source")]
        if not all(isinstance(v, str) for v in fields):
            return f"match {i}: type, url and source must be strings"
        matches.append(Match(token, *fields))
    return matches


async def judge(store: Store, pepper: bytes, prefixes: tuple[str, ...], match: Match,
                now: float) -> Verdict:
    """Revoke ``match`` if it is one of our keys (its secret checked against the store, so a
    well-formed forgery revokes nothing); a StoreError propagates (the alert is retried)."""
    parsed = parse_key(match.token, prefixes)
    if parsed is None:
        return Verdict(match, FALSE_POSITIVE)
    key_id, secret = parsed
    record = await store.get_key(key_id)
    if record is None or not hmac.compare_digest(hash_secret(pepper, key_id, secret),
                                                 record.secret_hash):
        return Verdict(match, FALSE_POSITIVE)
    if record.status is KeyStatus.REVOKED:
        return Verdict(match, TRUE_POSITIVE, key_id, record.tenant)
    await set_status(store, key_id, KeyStatus.REVOKED, now)
    return Verdict(match, TRUE_POSITIVE, key_id, record.tenant, newly_revoked=True)


def feedback(verdicts: Sequence[Verdict], raw: bool = True) -> list[dict[str, Any]]:
    """GitHub's false-positive feedback: ``token_raw`` (or ``token_hash``, SHA-256 hex),
    ``token_type`` and ``label`` per match."""
    out = []
    for v in verdicts:
        token = {"token_raw": v.match.token} if raw else \
            {"token_hash": hashlib.sha256(v.match.token.encode()).hexdigest()}
        out.append({**token, "token_type": v.match.type, "label": v.label})
    return out


def leaked_line(verdict: Verdict, now: float) -> str:
    """The audit line for a true positive: key id, tenant, where it leaked; never the token."""
    match = verdict.match
    ts = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
    return (f'{{"ts":"{ts}","event":"leaked","key_id":{_quote(verdict.key_id or "")},'
            f'"tenant":{_quote(verdict.tenant or "")},"url":{_quote(match.url[:_TEXT])},'
            f'"source":{_quote(match.source[:_TEXT])},"type":{_quote(match.type[:_TEXT])},'
            f'"revoked":{"true" if verdict.newly_revoked else "false"}}}')


def audit_leaks(verdicts: Sequence[Verdict], now: float,
                logger: logging.Logger | None = None) -> None:
    """One ``leaked`` line per true positive on the audit logger (WARNING: a leak is never
    routine)."""
    logger = logger or logging.getLogger(AUDIT_LOGGER)
    for verdict in verdicts:
        if verdict.label == TRUE_POSITIVE:
            logger.warning(leaked_line(verdict, now))
