"""Key record changes pushed to every replica: Redis pub/sub, and a version counter.

Every write of a key record (create, revoke, suspend, rotate, a limit change) bumps
``gk:{keys}:version`` in the same transaction, then publishes the key id on ``CHANNEL``. A
replica listening (``key_changes``) forgets that key's cached verification at once instead of
after ``keys.cache_ttl``. Pub/sub is at-most-once: a subscriber that was disconnected has missed
messages, so every (re)subscription first yields ``ALL`` ("anything may have changed: forget
every cached record"); and a replica that cannot subscribe at all can poll the version counter
(``keys_version``), one GET, on a path it already pays for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from typing import Any

CHANNEL = "gk:keys:changed"
ALL = "*"
"""Yielded on every (re)subscription: messages may have been missed."""
RETRY_AFTER = 0.5
"""Seconds between attempts to subscribe again while Redis is unreachable."""
_POLL = 1.0

log = logging.getLogger("gatekeeper")


async def key_changes(client: Any, failures: tuple[type[BaseException], ...]
                      ) -> AsyncGenerator[str, None]:
    """Key ids as they change, for as long as the caller iterates; ``ALL`` first and after every
    reconnection. Never raises for a Redis failure: it logs, waits and subscribes again."""
    while True:
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(CHANNEL)
            yield ALL
            while True:
                # its own timeout, not the store's short command timeout: waiting is the point
                message = await pubsub.get_message(timeout=_POLL)
                if message is not None and message["type"] == "message":
                    yield message["data"].decode()
        except failures as exc:
            log.warning("key change notifications lost, subscribing again: %s: %s",
                        type(exc).__name__, exc)
        finally:
            await pubsub.aclose()
        await asyncio.sleep(RETRY_AFTER)
