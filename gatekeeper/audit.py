"""One JSON line per refusal, on the ``gatekeeper.audit`` logger: what security teams read.

Lines carry the key id, never the key; the path is cut to 256 characters; values the client
controls are JSON-escaped, so a hostile header cannot forge a second line.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from gatekeeper.decision import Decision
from gatekeeper.facts import RequestFacts, describe

AUDIT_LOGGER = "gatekeeper.audit"


class AuditLog:
    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger(AUDIT_LOGGER)

    def refused(self, decision: Decision, facts: RequestFacts | None, now: float) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        line = {
            "ts": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
            "event": "refused",
            "reason": decision.reason.code,
            "status": decision.reason.status,
            "key_id": decision.key_id,
            "tenant": decision.tenant,
            **(describe(facts) if facts is not None else {}),
            "detail": decision.detail,
        }
        self.logger.info(json.dumps(line, ensure_ascii=True, separators=(",", ":")))
