"""A key's score as ``gatekeeper inspect`` reads it: written to the store in batches, off the
request path, by the process that scored the key.

Each process holds its keys' state in memory; a snapshot is what it last judged a key by (its
score, what the score asks for, the top reasons), written at most ``FLUSH_EVERY`` seconds
after the score changed and kept for ``resale.windows.long``. So ``inspect`` lags the live
score by up to the score's own lag (``scorer.py``) plus ``FLUSH_EVERY``; with several
replicas, the last one to score the key wins.
"""

from __future__ import annotations

import json
from typing import NamedTuple

FLUSH_EVERY = 1.0
"""Seconds between two batches of snapshots."""


class Snapshot(NamedTuple):
    key_id: str
    tenant: str | None
    at: float
    """When the score was computed (unix seconds)."""
    score: float
    would: str
    """What the score asks for (allow, flag, throttle, block, suspend), whatever the mode."""
    reasons: tuple[str, ...] = ()
    """The top contributions, largest first (``networks=12 (+40)``)."""

    def to_text(self) -> str:
        return json.dumps({"key_id": self.key_id, "tenant": self.tenant, "at": self.at,
                           "score": round(self.score, 1), "would": self.would,
                           "reasons": list(self.reasons)}, separators=(",", ":"))

    @classmethod
    def from_text(cls, text: str | bytes) -> Snapshot:
        data = json.loads(text)
        return cls(str(data["key_id"]), data.get("tenant"), float(data["at"]),
                   float(data["score"]), str(data["would"]),
                   tuple(str(r) for r in data.get("reasons", ())))
