"""A tenant's ``notify`` section: where its owner hears about budgets and its keys' fate.

    tenants:
      acme:
        notify:
          url: https://hooks.acme.example/gatekeeper
          secret_env: ACME_WEBHOOK_SECRET      # the signing secret, read from the environment
          events: [budget.warning, key.suspended]   # optional; default: every event

The URL may itself be a secret (a Slack-style hook carries its token in the path), so the
compiled target shows only its ``endpoint`` (scheme, host, port and a digest of the rest) in
diffs, fingerprints and logs. Plain ``http`` is accepted only for a loopback host: a webhook
names key ids and budgets and should not cross a network unencrypted. The secret itself is
read when the server starts (``webhooks.resolve_targets``), never stored in the policy.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from gatekeeper.policy.fields import Fields

BUDGET_WARNING = "budget.warning"
"""A key's or tenant's quota reached 80% in its window."""
BUDGET_EXHAUSTED = "budget.exhausted"
"""A key's or tenant's quota reached 100%: its requests are refused until the window ends."""
KEY_FLAGGED = "key.flagged"
KEY_SUSPENDED = "key.suspended"
KEY_REVOKED = "key.revoked"
KEY_LEAKED = "key.leaked"
"""A key reported leaked (a secret-scanning alert), and revoked for it."""
EVENTS = (BUDGET_WARNING, BUDGET_EXHAUSTED, KEY_FLAGGED, KEY_SUSPENDED, KEY_REVOKED, KEY_LEAKED)

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LOOPBACK_NAMES = ("localhost",)


@dataclass(frozen=True, slots=True)
class NotifyTarget:
    url: str = field(repr=False)
    """Where events are POSTed. Not shown anywhere: it may carry a token."""
    endpoint: str
    """What logs, diffs and the fingerprint show: ``https://host:port/#digest``."""
    secret_env: str
    events: frozenset[str] = frozenset(EVENTS)


def endpoint_of(url: str) -> str:
    """``scheme://host[:port]`` and 8 hex digits of SHA-256 over the whole URL: enough to tell
    two targets apart in a diff without printing a path or query that may hold a token."""
    parts = urlsplit(url)
    digest = hashlib.sha256(url.encode()).hexdigest()[:8]
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}/#{digest}"


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot receive webhooks, or None."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return "is not a URL"
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "must be an https:// URL"
    if parts.username is not None or parts.password is not None:
        return "must not hold a user or password (the secret signs the request instead)"
    if parts.scheme == "http" and not _loopback(parts.hostname):
        return "must be https:// (plain http only to a loopback address)"
    return None


def _site(url: str) -> str:
    """What an error shows of a wrong URL: up to its host, never a path or query (a token)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{re.split(r'[/?#]', rest, maxsplit=1)[0].rpartition('@')[2]}" \
        if sep else "(not a URL)"


def _loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_notify(fields: Fields) -> NotifyTarget | None:
    url = fields.get("url", str)
    env = fields.get("secret_env", str)
    events = fields.str_list("events")
    fields.finish()
    ok = True
    if url is not None:
        problem = url_problem(url)
        if problem is not None:
            fields.error("url", _site(url), problem)
            ok = False
    if env is not None and not _ENV_NAME.fullmatch(env):
        fields.error("secret_env", env, "is not an environment variable name")
        ok = False
    for i, name in enumerate(events):
        if name not in EVENTS:
            fields.error(f"events[{i}]", name, f"must be one of {', '.join(EVENTS)}")
            ok = False
    if not ok or url is None or env is None:
        return None
    return NotifyTarget(url, endpoint_of(url), env,
                        frozenset(events) if fields.has("events") else frozenset(EVENTS))
