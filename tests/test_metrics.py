"""The decision metrics as Prometheus scrapes them: counters and cumulative latency buckets."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from bisect import bisect_left

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest

from gatekeeper import Metrics, compile_policy
from gatekeeper.metrics import LATENCY_BUCKETS
from gatekeeper.policy.canonical import fingerprint
from gatekeeper.reasons import KEY_REVOKED, OK, REFUSALS
from tests.conftest import POLICY
from tests.exposition import scrape


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


def test_policy_metrics_say_which_policy_runs_since_when_and_refused_reloads() -> None:
    metrics = Metrics()
    first = compile_policy(POLICY)
    metrics.policy_loaded(first, 1_700_000_000.0)
    value = metrics.registry.get_sample_value
    print_ = fingerprint(first)
    assert value("gatekeeper_policy_info", {"fingerprint": print_}) == 1
    assert value("gatekeeper_policy_tenants") == len(first.tenants)
    assert value("gatekeeper_policy_last_reload_success_timestamp_seconds") == 1_700_000_000
    metrics.policy_reload_failed()
    assert value("gatekeeper_policy_reload_errors_total") == 1
    assert value("gatekeeper_policy_last_reload_successful") == 0
    assert value("gatekeeper_policy_info", {"fingerprint": print_}) == 1  # the old one runs
    second = compile_policy({**POLICY, "tenants": {**POLICY["tenants"], "new": {}}})
    metrics.policy_reloaded(second, 1_700_000_060.0)
    assert value("gatekeeper_policy_reloads_total") == 1
    assert value("gatekeeper_policy_last_reload_successful") == 1
    assert value("gatekeeper_policy_info", {"fingerprint": print_}) is None  # one series only
    assert value("gatekeeper_policy_info", {"fingerprint": fingerprint(second)}) == 1
    assert value("gatekeeper_policy_tenants") == len(second.tenants)


def test_the_fingerprint_ignores_set_order_path_and_store_but_not_a_rule() -> None:
    base = {**POLICY, "tenants": {"acme": {"allowed_networks": ["10.0.0.0/8", "192.0.2.0/24"],
                                           "request": {"forbidden_fields": ["a", "b", "c"]}}}}
    same = {**base, "store": "memory://", "tenants": {"acme": {
        "allowed_networks": ["192.0.2.0/24", "10.0.0.0/8"],
        "request": {"forbidden_fields": ["c", "a", "b"]}}}}
    assert fingerprint(compile_policy(base)) == fingerprint(compile_policy(same, "other.yaml"))
    narrower = {**base, "tenants": {"acme": {**base["tenants"]["acme"],
                                             "allowed_networks": ["10.0.0.0/8"]}}}
    assert fingerprint(compile_policy(base)) != fingerprint(compile_policy(narrower))
    # and in another process, with another hash seed, the same policy prints the same
    code = ("from gatekeeper import compile_policy; from gatekeeper.policy.canonical import "
            f"fingerprint; print(fingerprint(compile_policy({same!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONHASHSEED": "12345"}, check=True).stdout
    assert out.strip() == fingerprint(compile_policy(base))


@pytest.mark.anyio
async def test_the_exposition_follows_prometheus_naming_conventions() -> None:
    text = await scrape()
    families = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))
    for name, kind in families.items():
        assert name.startswith("gatekeeper_"), name
        if kind == "counter":
            assert name.endswith("_total") or name.endswith("_created"), name
        if "latency" in name or "duration" in name or "timestamp" in name:
            assert name.endswith("_seconds"), name
    for labels in re.findall(r"^gatekeeper_decisions_total(\{[^}]*\})", text, re.MULTILINE):
        assert set(re.findall(r"(\w+)=", labels)) == {"outcome", "reason"}
    reasons = set(re.findall(r'reason="([^"]+)"', text))
    assert reasons == {r.code for r in (OK, *REFUSALS)}  # a closed set, nothing from a request
    assert 'gatekeeper_decisions_total{outcome="refuse",reason="key_revoked"} 1.0' in text


@pytest.mark.anyio
async def test_promtool_finds_the_exposition_clean() -> None:
    """Debian's `prometheus` package ships promtool; .ci/run installs it, so under CI=true
    this never skips."""
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing under CI=true: .ci/run installs Debian's prometheus")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    text = await scrape()
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # and it would have said so: a counter without _total is refused
    bad = "# HELP gatekeeper_x x\n# TYPE gatekeeper_x counter\ngatekeeper_x 1\n"
    refused = subprocess.run([promtool, "check", "metrics"], input=bad, capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode != 0 and "_total" in refused.stdout + refused.stderr


@given(st.floats(0, 1.0) | st.sampled_from(LATENCY_BUCKETS))
def test_a_latency_falls_in_the_bucket_bisect_finds(seconds: float) -> None:
    metrics = Metrics()
    metrics.record(KEY_REVOKED, seconds)
    counts = metrics.latency[1]
    assert counts[bisect_left(LATENCY_BUCKETS, seconds)] == 1 and sum(counts) == 1
    assert metrics.latency_sum[1] == seconds and sum(metrics.latency[0]) == 0
