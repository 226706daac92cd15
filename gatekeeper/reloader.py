"""Policy hot reload from the policy file: when it changes on disk (polled), on SIGHUP, or when
asked (``await gatekeeper.reload_policy()``).

The file is read and compiled off the event loop (YAML parsing and validation take
milliseconds), then ``Gatekeeper.reload`` swaps the runtime in with one assignment. A policy
that does not load, or that changes what cannot change in a running process (the store, the
pepper), is refused: the running policy stays, and the error is logged naming its field.
Polling the file's identity (inode, size, modification time) every ``interval`` seconds costs a
``stat`` call and needs no inotify; an editor that replaces the file, a ``kubectl`` ConfigMap
update (a symlink swap) and an in-place write are all seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from gatekeeper.errors import GatekeeperError
from gatekeeper.policy.load import load_policy

if TYPE_CHECKING:
    from gatekeeper.middleware import Gatekeeper

log = logging.getLogger("gatekeeper")

Fingerprint = tuple[int, int, int] | None


def fingerprint(path: Path) -> Fingerprint:
    """What changes when the file does; None while it cannot be read (mid-replacement)."""
    try:
        st = os.stat(path)  # follows a symlink: a ConfigMap swaps the link, not the file
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class PolicyReloader:
    """Reloads one Gatekeeper from one policy file. ``on_result(ok, error)`` is told each
    outcome (metrics)."""

    def __init__(self, gatekeeper: Gatekeeper, path: Path, interval: float | None,
                 on_result: Callable[[bool, str | None], None] | None = None) -> None:
        self.gatekeeper = gatekeeper
        self.path = path
        self.interval = interval
        self.on_result = on_result
        self._seen = fingerprint(path)
        self._task: asyncio.Task[None] | None = None
        self._lock = anyio.Lock()
        self._sighup = False

    def start(self) -> None:
        """Start polling (when an interval was given) and listen for SIGHUP (main thread
        only: elsewhere the signal stays the process's default)."""
        loop = asyncio.get_running_loop()
        if self.interval is not None and self._task is None:
            self._task = loop.create_task(self._poll(self.interval))
        try:
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
            self._sighup = True
        except (ValueError, RuntimeError, NotImplementedError, AttributeError):
            log.debug("SIGHUP not handled here (not the main thread or no signals)")

    async def stop(self) -> None:
        if self._sighup:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            self._sighup = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _on_sighup(self) -> None:
        asyncio.get_running_loop().create_task(self.reload("SIGHUP"))

    async def _poll(self, interval: float) -> None:
        while True:
            await anyio.sleep(interval)
            now = fingerprint(self.path)
            if now is not None and now != self._seen:
                await self.reload("file changed")

    async def reload(self, why: str = "asked") -> bool:
        """Read, compile and swap in the file's policy; False (and the old one running) when it
        does not load. Reloads never overlap."""
        async with self._lock:
            seen = fingerprint(self.path)
            try:
                try:
                    policy = await anyio.to_thread.run_sync(load_policy, self.path)
                except GatekeeperError:
                    self.gatekeeper.metrics.policy_reload_failed()  # reload() counts its own
                    raise
                self.gatekeeper.reload(policy)
            except GatekeeperError as exc:
                self._seen = seen  # the same broken file is not retried every second
                log.error("policy reload (%s) refused, the running policy stays: %s", why, exc)
                self._tell(False, str(exc))
                return False
            self._seen = seen
            log.info("policy reloaded (%s): %s, %d tenants", why, self.path,
                     len(policy.tenants))
            self._tell(True, None)
            return True

    def _tell(self, ok: bool, error: str | None) -> None:
        if self.on_result is not None:
            self.on_result(ok, error)
