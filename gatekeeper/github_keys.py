"""GitHub's secret-scanning signing keys, and an alert's signature checked against them.

GitHub signs the raw body of each secret-scanning alert with ECDSA on P-256 over SHA-256
(base64 DER in ``Github-Public-Key-Signature``) and names the key in
``Github-Public-Key-Identifier``. Its keys are published as
``{"public_keys": [{"key_identifier", "key": PEM, "is_current"}]}`` at ``GITHUB_KEYS_URL``.
``SigningKeys`` holds them, read from a file, a document or that URL; a URL is fetched at
startup and refreshed in the background (and soon after an alert names a key not yet known:
GitHub rotates them), so a request never waits on the network.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from gatekeeper.errors import ConfigError
from gatekeeper.jwt_verifier import fetch_url
from gatekeeper.policy.issuers import _fetchable

log = logging.getLogger("gatekeeper")

GITHUB_KEYS_URL = "https://api.github.com/meta/public_keys/secret_scanning"
REFRESH = 3600.0
"""Seconds between fetches of a key URL: unauthenticated, GitHub allows 60 an hour."""
UNKNOWN_KEY_REFETCH = 60.0
"""At most one early fetch per this many seconds for alerts naming an unknown key."""
MAX_SIGNATURE = 512
"""Characters of base64: a P-256 DER signature is at most 72 bytes (96 characters)."""
_ECDSA = ec.ECDSA(hashes.SHA256())

Keys = Mapping[str, ec.EllipticCurvePublicKey]


def parse_key_document(document: bytes | str | Mapping[str, object],
                       field: str = "public_keys") -> dict[str, ec.EllipticCurvePublicKey]:
    """The P-256 keys of a GitHub key document by identifier. Entries of another kind are
    skipped (GitHub may add some); a document with none usable is a ConfigError."""
    try:
        data = json.loads(document) if isinstance(document, bytes | str) else document
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(field, "(document)", "is not JSON") from None
    items = data.get("public_keys") if isinstance(data, Mapping) else None
    if not isinstance(items, list):
        raise ConfigError(field, "(document)", 'must be {"public_keys": [...]}')
    keys: dict[str, ec.EllipticCurvePublicKey] = {}
    for item in items:
        if not isinstance(item, Mapping):
            continue
        key_id, pem = item.get("key_identifier"), item.get("key")
        if not isinstance(key_id, str) or not key_id or not isinstance(pem, str):
            continue
        try:
            key = load_pem_public_key(pem.encode())
        except (ValueError, TypeError):
            continue
        if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
            keys[key_id] = key
    if not keys:
        raise ConfigError(field, "(document)", "holds no ECDSA P-256 public key")
    return keys


def signature_valid(keys: Keys, key_id: str, signature: str, body: bytes) -> bool:
    """Whether ``signature`` (base64 DER) is ``key_id``'s ECDSA P-256 SHA-256 over ``body``."""
    key = keys.get(key_id)
    if key is None or len(signature) > MAX_SIGNATURE:
        return False
    try:
        der = base64.b64decode(signature, validate=True)
        key.verify(der, body, _ECDSA)
    except (binascii.Error, ValueError, InvalidSignature):
        return False
    return True


class SigningKeys:
    """GitHub's signing keys, from exactly one of ``url``, ``file`` or ``document``.

    ``token_env``: an environment variable holding a GitHub token sent with URL fetches (no
    scope needed; it lifts the rate limit). A file is re-read at each refresh.
    """

    def __init__(self, *, url: str | None = None, file: str | os.PathLike[str] | None = None,
                 document: bytes | str | Mapping[str, object] | None = None,
                 refresh: float = REFRESH, token_env: str | None = None) -> None:
        given = [name for name, value in (("url", url), ("file", file), ("document", document))
                 if value is not None]
        if len(given) != 1:
            raise ConfigError("signing_keys", ", ".join(given) or "(none)",
                              "takes exactly one of url, file, document")
        if url is not None and not _fetchable(url):
            raise ConfigError("signing_keys.url", url,
                              "must be an https URL (http only on loopback)")
        if not refresh > 0:
            raise ConfigError("signing_keys.refresh", refresh, "must be more than 0 seconds")
        self.url = url
        self.file = None if file is None else Path(file)
        self.refresh = refresh
        self._token_env = token_env
        self.keys: Keys = {}
        self.loaded_at: float | None = None
        """Monotonic time of the last successful load; None until one."""
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._early_after = float("-inf")
        if document is not None:
            self._set(parse_key_document(document, "signing_keys.document"))
        elif self.file is not None:
            self._set(self._read_file())

    def _set(self, keys: Keys) -> None:
        self.keys = keys
        self.loaded_at = time.monotonic()

    def _read_file(self) -> Keys:
        assert self.file is not None
        try:
            text = self.file.read_bytes()
        except OSError as exc:
            raise ConfigError("signing_keys.file", str(self.file),
                              f"cannot be read: {type(exc).__name__}") from None
        return parse_key_document(text, "signing_keys.file")

    async def load(self) -> None:
        """Read the keys once more from their source (a ConfigError or OSError when it
        fails; the keys held stay)."""
        if self.url is not None:
            headers = {"user-agent": "gatekeeper-secret-scanning"}
            token = os.environ.get(self._token_env or "", "").strip()
            if token:
                headers["authorization"] = f"Bearer {token}"
            self._set(parse_key_document(await fetch_url(self.url, headers),
                                         "signing_keys.url"))
        elif self.file is not None:
            self._set(self._read_file())

    def verify(self, key_id: str, signature: str, body: bytes) -> bool:
        """Check an alert; one naming an unknown key asks the refresher for an early fetch."""
        if key_id not in self.keys:
            now = time.monotonic()
            if self._wake is not None and now >= self._early_after:
                self._early_after = now + UNKNOWN_KEY_REFETCH
                self._wake.set()
            return False
        return signature_valid(self.keys, key_id, signature, body)

    async def start(self, wait: bool = True) -> None:
        """Start refreshing the keys in the background. A URL is fetched first, awaited when
        ``wait`` (a failure is logged: alerts get 503 until a later fetch works), else in the
        background at once. Idempotent."""
        if self._task is not None or (self.url is None and self.file is None):
            return
        self._wake = asyncio.Event()
        if self.url is not None:
            if wait:
                await self._load_logged()
            else:
                self._wake.set()
        self._task = asyncio.get_running_loop().create_task(self._refresh())

    async def _load_logged(self) -> bool:
        try:
            await self.load()
        except (ConfigError, OSError, ValueError) as exc:
            log.error("secret scanning: GitHub signing keys not loaded from %s: %s",
                      self.url or self.file, exc)
            return False
        return True

    async def _refresh(self) -> None:
        assert self._wake is not None
        failures = 0 if self.keys else 1
        while True:
            wait = self.refresh if not failures else min(self.refresh, 2.0 ** failures)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            self._wake.clear()
            failures = 0 if await self._load_logged() else failures + 1

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = self._wake = None
