"""Shared resale signals on Redis (``SignalStore``): HyperLogLogs and request counters per key
and per bucket of its short window, one pipelined round trip per batch.

Names: ``gk:{r:<key id>}:<dimension>:<bucket ms>:<bucket number>``, one hash tag per key, so
a key's buckets share a slot and one PFCOUNT merges them on a cluster too (redis-py's cluster
pipeline sends each node its commands, the nodes in parallel). Per key and batch: a PFADD of
its new values per dimension and an INCRBY of its new requests into the current bucket, each
with an EXPIRE of a window and a bucket (a bucket is read for one window after it ends), then
a PFCOUNT over the window's buckets per dimension the key has, and one MGET of its request
buckets (sent by name: redis-py's cluster pipeline refuses its ``pfcount`` and ``mget``
methods, not knowing the keys share a slot; Redis itself accepts them). HyperLogLog counts
are estimates (Redis: 0.81% standard error), exact in practice for the few values a signal's
``allow`` is about.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

from gatekeeper.store.signals import Counts, KeySignals

LETTERS = "ancuem"
"""One per dimension of ``resale/state.DIMENSIONS``, in its order."""
_REQUESTS = "q"
MEMBER_CHARS = 64
"""Longer values are sent as a 33-character digest."""


def bucket_names(key_id: str, letter: str, slot: float, last: int, slots: int) -> list[str]:
    """The names of the ``slots`` buckets ending with bucket number ``last``."""
    head = f"gk:{{r:{key_id}}}:{letter}:{round(slot * 1000)}:"
    return [head + str(n) for n in range(last - slots + 1, last + 1)]


def queue(pipe: Any, batch: Sequence[KeySignals], now: float) -> None:
    """Every write and read of ``batch`` onto ``pipe`` (a redis-py pipeline), in the order
    ``counts`` reads the replies."""
    for key in batch:
        last = int(now // key.slot)
        ttl = math.ceil(key.slot * (key.slots + 1))
        for letter, members, read in zip(LETTERS, key.members, key.read, strict=True):
            if not read:
                continue
            names = bucket_names(key.key_id, letter, key.slot, last, key.slots)
            if members:
                pipe.pfadd(names[-1], *(_short(m) for m in members))
                pipe.expire(names[-1], ttl)
            pipe.execute_command("PFCOUNT", *names)  # one slot: allowed on a cluster too
        names = bucket_names(key.key_id, _REQUESTS, key.slot, last, key.slots)
        if key.requests:
            pipe.incrby(names[-1], key.requests)
            pipe.expire(names[-1], ttl)
        pipe.execute_command("MGET", *names)


def _short(member: str) -> str:
    """A long value (a user agent, a ``user`` id: what clients send) as a digest: distinct
    values stay distinct, and a batch stays small however long they are."""
    if len(member) <= MEMBER_CHARS:
        return member
    return "#" + hashlib.blake2b(member.encode(), digest_size=16).hexdigest()


def counts(batch: Sequence[KeySignals], replies: Sequence[Any]) -> list[Counts]:
    """``queue``'s replies read back: per key, its distinct values per dimension, then its
    requests over the window."""
    found: list[Counts] = []
    at = 0
    for key in batch:
        values: list[int] = []
        for members, read in zip(key.members, key.read, strict=True):
            if not read:
                values.append(0)
                continue
            at += 2 if members else 0
            values.append(int(replies[at]))
            at += 1
        at += 2 if key.requests else 0
        values.append(sum(int(n) for n in replies[at] if n is not None))
        at += 1
        found.append(tuple(values))
    return found


__all__ = ["LETTERS", "bucket_names", "counts", "queue"]
