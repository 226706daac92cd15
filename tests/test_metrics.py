"""The decision metrics as Prometheus scrapes them: counters and cumulative latency buckets."""

from __future__ import annotations

from prometheus_client import generate_latest

from gatekeeper import Metrics
from gatekeeper.reasons import KEY_REVOKED, OK


def test_counts_and_buckets_are_what_was_recorded() -> None:
    metrics = Metrics()
    for seconds in (7e-6, 10e-6, 3e-3):
        metrics.record(OK, seconds)
    metrics.record(KEY_REVOKED, 1.0)  # beyond the last bucket: only +Inf
    value = metrics.registry.get_sample_value
    assert value("gatekeeper_decisions_total", {"outcome": "allow", "reason": "ok"}) == 3
    assert value("gatekeeper_decisions_total",
                 {"outcome": "refuse", "reason": "key_revoked"}) == 1
    assert value("gatekeeper_decisions_total",
                 {"outcome": "refuse", "reason": "key_unknown"}) == 0
    bucket = "gatekeeper_added_latency_seconds_bucket"
    assert value(bucket, {"outcome": "allow", "le": "5e-06"}) == 0
    assert value(bucket, {"outcome": "allow", "le": "1e-05"}) == 2  # le is inclusive
    assert value(bucket, {"outcome": "allow", "le": "0.0025"}) == 2
    assert value(bucket, {"outcome": "allow", "le": "+Inf"}) == 3
    assert value(bucket, {"outcome": "refuse", "le": "0.1"}) == 0
    assert value(bucket, {"outcome": "refuse", "le": "+Inf"}) == 1
    total = value("gatekeeper_added_latency_seconds_sum", {"outcome": "allow"})
    assert total is not None and abs(total - 3.017e-3) < 1e-12
    text = generate_latest(metrics.registry).decode()
    assert "# TYPE gatekeeper_decisions_total counter" in text
    assert "# TYPE gatekeeper_added_latency_seconds histogram" in text


def test_two_instances_do_not_share_counts() -> None:
    a, b = Metrics(), Metrics()
    a.record(OK, 1e-6)
    assert b.registry.get_sample_value(
        "gatekeeper_decisions_total", {"outcome": "allow", "reason": "ok"}) == 0
