"""Audit lines are hand-assembled for speed: they must still be exactly one valid JSON object."""

from __future__ import annotations

import json
import logging
import random
from datetime import UTC, datetime

from gatekeeper import AuditLog, Decision, RequestFacts, parse_ip
from gatekeeper import reasons as r
from gatekeeper.credentials import Credential
from gatekeeper.principal import CredentialKind


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _audit() -> tuple[AuditLog, Capture]:
    logger = logging.getLogger(f"test.audit.{random.random()}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    capture = Capture()
    logger.addHandler(capture)
    return AuditLog(logger), capture


def test_hostile_values_stay_inside_one_json_object() -> None:
    audit, capture = _audit()
    rng = random.Random(7)
    for _ in range(300):
        text = "".join(chr(rng.choice([rng.randint(0, 0x7f), rng.randint(0x80, 0x10ffff)]))
                       for _ in range(rng.randint(0, 40))).replace("\ud800", "")
        facts = RequestFacts("POST", "/v1/" + text, parse_ip("203.0.113.5"),
                             Credential(CredentialKind.API_KEY, "gk_x", "x-api-key"),
                             None, text, None)
        decision = Decision(r.TENANT_MISMATCH, None, text[:12] or None, "acme", text)
        audit.refused(decision, facts, 1_800_000_000.5)
        line = capture.lines[-1]
        assert "\n" not in line and line.isascii()
        event = json.loads(line)
        assert (event["path"], event["detail"]) == (("/v1/" + text)[:256], text)
        assert event["credential_header"] == "x-api-key" and event["status"] == 403
        assert "gk_x" not in line


def test_timestamps_match_datetime_across_seconds() -> None:
    audit, capture = _audit()
    rng = random.Random(11)
    now = 1_800_000_000.0
    for _ in range(500):
        now += rng.choice([0.0001, 0.3, 0.999, 1.0, 7.25])
        audit.refused(Decision(r.KEY_REVOKED, None, "k", "acme"), None, now)
        expected = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
        assert json.loads(capture.lines[-1])["ts"] == expected


def test_nothing_is_built_when_the_logger_is_off() -> None:
    audit, capture = _audit()
    audit.logger.setLevel(logging.WARNING)
    audit.refused(Decision(r.KEY_REVOKED), None, 1.0)
    assert capture.lines == []


def test_a_huge_method_is_cut_in_the_audit_line() -> None:
    audit, capture = _audit()
    facts = RequestFacts("X" * 5000, "/v1/x", parse_ip("203.0.113.5"), None, None, None, None)
    audit.refused(Decision(r.KEY_REVOKED), facts, 1.0)
    assert json.loads(capture.lines[-1])["method"] == "X" * 16


def test_a_slow_audit_handler_runs_behind_a_queue_not_on_the_loop() -> None:
    import asyncio
    import time

    from gatekeeper import Gatekeeper, MemoryStore
    from tests.conftest import PEPPER, Recorder, asgi_request

    class Slow(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.lines: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            time.sleep(0.05)  # a remote syslog on a bad day
            self.lines.append(record.getMessage())

    logger = logging.getLogger("test.audit.slow")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    slow = Slow()
    logger.addHandler(slow)
    gk = Gatekeeper(Recorder(), {"tenants": {"acme": {}}}, store=MemoryStore(), pepper=PEPPER,
                    audit=AuditLog(logger))

    async def flood() -> float:
        await gk.startup()
        started = time.monotonic()
        for _ in range(20):
            sent = await asgi_request(gk, "/v1/models")
            assert sent[0]["status"] == 401
        took = time.monotonic() - started
        await gk.shutdown()  # writes what is queued, then gives the handler back
        return took

    took = asyncio.run(flood())
    assert took < 0.5  # twenty lines at 50 ms each would have held the loop a full second
    assert len(slow.lines) == 20 and all('"event":"refused"' in x for x in slow.lines)
    assert logger.handlers == [slow]


def test_a_flagged_request_is_one_audit_line_per_decision_record() -> None:
    import asyncio

    from gatekeeper import Gatekeeper, MemoryStore, compile_policy, key_admin
    from tests.conftest import PEPPER, Recorder, asgi_request

    audit, capture = _audit()
    policy = compile_policy({"tenants": {"acme": {"countries": {"allow": ["DE"],
                                                                 "unknown": "flag"}}}})
    store = MemoryStore()
    gk = Gatekeeper(Recorder(), policy, store=store, pepper=PEPPER, audit=audit)

    async def run() -> list[int]:
        key, _ = await key_admin.create_key(store, PEPPER, policy, "acme", 1e9)
        headers = [(b"authorization", f"Bearer {key}".encode())]
        # 192.0.2.0/24 (documentation) is in no country: unknown, so flagged and let through
        codes = [(await asgi_request(gk, "/v1/models", headers))[0]["status"]
                 for _ in range(3)]
        await gk.shutdown()  # the audit queue is written out
        return codes

    assert asyncio.run(run()) == [200, 200, 200]
    assert len(capture.lines) == 1  # the miss that made the record; the reuses say nothing
    line = json.loads(capture.lines[0])
    assert line["event"] == "flagged" and "country_unknown" in line["signals"]
