"""``SecretScanning``: a small ASGI app for GitHub's secret-scanning partner alerts.

GitHub finds a key matching the registered pattern (``key_pattern(keys.prefix)``) in a public
repository, gist or npm package and POSTs it here within seconds. The alert's signature is
checked (``github_keys.py``) before anything else is read; each reported key that is ours is
revoked in the store (``leaks.py``), so every server refuses it within ``keys.cache_ttl``
(Redis: at once). It answers itself and never calls the app behind gatekeeper.

    401  missing or bad signature (nothing changed)     400  not an alert
    413  body over ``max_body``                         405  not a POST
    503  signing keys not loaded yet, or the store failed (GitHub retries; a retry is safe)
    200  GitHub's feedback: ``[{token_raw, token_type, label}]``
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

from gatekeeper.audit import AUDIT_LOGGER
from gatekeeper.clock import Clock, SystemClock
from gatekeeper.errors import GatekeeperError
from gatekeeper.github_keys import SigningKeys
from gatekeeper.keys import PREFIXES
from gatekeeper.leaks import TRUE_POSITIVE, Verdict, audit_leaks, feedback, judge, parse_alert
from gatekeeper.policy.keys import load_pepper
from gatekeeper.policy.load import load_policy
from gatekeeper.policy.model import Policy
from gatekeeper.store import DEFAULT_STORE_URL, Store, store_from_url
from gatekeeper.types import Message, Receive, Scope, Send

if TYPE_CHECKING:
    from gatekeeper.middleware import Gatekeeper

log = logging.getLogger("gatekeeper")

MAX_BODY = 2 << 20
"""Bytes of alert body read at most; GitHub batches matches, each a few hundred bytes."""
KEY_ID_HEADER = b"github-public-key-identifier"
SIGNATURE_HEADER = b"github-public-key-signature"
_RETRY = (b"retry-after", b"60")


class SecretScanning:
    """Verify, revoke, answer. ``prefixes``: the accepted key prefixes, or a function giving
    them (``for_gatekeeper`` follows policy reloads); ``token_hash``: answer ``token_hash``
    (SHA-256) instead of echoing ``token_raw``; ``on_revoked``: called with each key id
    revoked (``for_gatekeeper`` drops it from that process's caches at once)."""

    def __init__(self, store: Store, pepper: bytes, signing_keys: SigningKeys, *,
                 prefixes: tuple[str, ...] | Callable[[], tuple[str, ...]] = PREFIXES,
                 clock: Clock | None = None, max_body: int = MAX_BODY,
                 token_hash: bool = False, audit: logging.Logger | None = None,
                 on_revoked: Callable[[str], None] | None = None,
                 owns_store: bool = False) -> None:
        self.store = store
        self._pepper = pepper
        self.signing_keys = signing_keys
        self._prefixes = prefixes if callable(prefixes) else (lambda: prefixes)
        self.clock = clock or SystemClock()
        self.max_body = max_body
        self._raw = not token_hash
        self.audit = audit or logging.getLogger(AUDIT_LOGGER)
        self._on_revoked = on_revoked
        self._owns_store = owns_store
        self._started = False
        self._start_lock = asyncio.Lock()

    @classmethod
    def from_policy(cls, policy: Policy | str | os.PathLike[str], signing_keys: SigningKeys,
                    *, store: Store | str | None = None, pepper: bytes | None = None,
                    **options: Any) -> SecretScanning:
        """Its own connection to the policy's store (a server sharing it refuses a revoked
        key within ``keys.cache_ttl``), the policy's pepper and prefixes."""
        compiled = policy if isinstance(policy, Policy) else load_policy(policy)
        owns = not isinstance(store, Store)
        if not isinstance(store, Store):
            store = store_from_url(store or compiled.store or DEFAULT_STORE_URL, create=False)
        return cls(store, pepper if pepper is not None else load_pepper(compiled.keys),
                   signing_keys, prefixes=compiled.keys.prefixes, owns_store=owns, **options)

    @classmethod
    def for_gatekeeper(cls, gatekeeper: Gatekeeper, signing_keys: SigningKeys,
                       **options: Any) -> SecretScanning:
        """Share a Gatekeeper's store, pepper, clock, audit logger and (current) prefixes; a
        key revoked here is dropped from its caches at once."""
        def forget(key_id: str) -> None:
            runtime = gatekeeper.runtime
            runtime.authenticator.forget(key_id)
            runtime.decisions.clear()

        return cls(gatekeeper.store, gatekeeper._pepper, signing_keys,
                   prefixes=lambda: gatekeeper.policy.keys.prefixes, clock=gatekeeper.clock,
                   audit=gatekeeper.audit.logger, on_revoked=forget, **options)

    # --- lifecycle -----------------------------------------------------------------------

    async def startup(self, wait: bool = True) -> None:
        """Connect the store (when this app owns it) and load the signing keys. Idempotent."""
        if self._started:
            return
        async with self._start_lock:
            if self._started:
                return
            if self._owns_store:
                await self.store.connect()
            await self.signing_keys.start(wait)
            self._started = True

    async def _start_lazily(self) -> bool:
        """No lifespan (mounted): start on the first request, fetching a URL's keys in the
        background, not here. A failure is logged and tried again on the next alert."""
        try:
            await self.startup(wait=False)
        except Exception as exc:
            log.error("secret scanning cannot start: %s", exc)
            return False
        return True

    async def shutdown(self) -> None:
        await self.signing_keys.aclose()
        if self._owns_store:
            await self.store.close()
        self._started = False

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object) -> AsyncIterator[None]:
        """For ``Starlette(lifespan=...)`` when this app is mounted (mounts get no lifespan)."""
        await self.startup()
        try:
            yield
        finally:
            await self.shutdown()

    # --- requests ------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        if not self._started and not await self._start_lazily():
            status, body, headers = _error(503, "cannot start (see the log)", _RETRY)
        else:
            status, body, headers = await self._answer(scope, receive)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"cache-control", b"no-store"), *headers]})
        await send({"type": "http.response.body", "body": body})

    async def _answer(self, scope: Scope,
                      receive: Receive) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        if scope.get("method") != "POST":
            return _error(405, "POST an alert here", (b"allow", b"POST"))
        found = _headers(scope["headers"])
        key_id, signature = found.get(KEY_ID_HEADER), found.get(SIGNATURE_HEADER)
        if not key_id or not signature:
            return _error(401, "missing GitHub signature headers")
        length = found.get(b"content-length", b"")
        too_big = _error(413, f"alert over {self.max_body} bytes")
        if length.isdigit() and int(length) > self.max_body:
            return too_big
        body = await _read_body(receive, self.max_body)
        if body is None:
            return too_big
        if not self.signing_keys.keys:
            return _error(503, "GitHub signing keys not loaded yet", _RETRY)
        if not self.signing_keys.verify(key_id.decode("latin-1"),
                                        signature.decode("latin-1"), body):
            log.warning("secret scanning: alert refused, bad signature (key identifier %r)",
                        key_id[:80].decode("latin-1"))
            return _error(401, "bad signature")
        matches = parse_alert(body)
        if isinstance(matches, str):
            return _error(400, matches)
        now = self.clock.now()
        prefixes = self._prefixes()
        verdicts: list[Verdict] = []
        try:
            for match in matches:
                verdicts.append(await judge(self.store, self._pepper, prefixes, match, now))
        except GatekeeperError as exc:  # the store failed: say what was done, and be retried
            log.error("secret scanning: store failed after %d of %d matches: %s",
                      len(verdicts), len(matches), exc)
            self._done(verdicts, now)
            return _error(503, "key store unavailable", _RETRY)
        self._done(verdicts, now)
        return 200, json.dumps(feedback(verdicts, self._raw)).encode(), []

    def _done(self, verdicts: list[Verdict], now: float) -> None:
        audit_leaks(verdicts, now, self.audit)
        ours = [v for v in verdicts if v.label == TRUE_POSITIVE]
        revoked = [v.key_id for v in ours if v.newly_revoked and v.key_id is not None]
        if self._on_revoked is not None:
            for key_id in revoked:
                self._on_revoked(key_id)
        log.warning("secret scanning: %d reported, %d ours, %d revoked now: %s",
                    len(verdicts), len(ours), len(revoked), ", ".join(revoked) or "-")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.error("secret scanning cannot start: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _headers(raw: list[tuple[bytes, bytes]]) -> Mapping[bytes, bytes]:
    """The three headers read, by lowercase name; a repeated one counts as absent (two
    signatures, one of which may be forged, are not a signature)."""
    found: dict[bytes, bytes] = {}
    for name, value in raw:
        name = name.lower()
        if name in (KEY_ID_HEADER, SIGNATURE_HEADER, b"content-length"):
            found[name] = b"" if name in found else value.strip()
    return found


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None as soon as it passes ``limit`` bytes."""
    body = bytearray()
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return bytes(body)
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        if not message.get("more_body", False):
            return bytes(body)


def _error(status: int, problem: str,
           *headers: tuple[bytes, bytes]) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    return status, json.dumps({"error": problem}).encode(), list(headers)
