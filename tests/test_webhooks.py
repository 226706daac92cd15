"""Owner webhooks, the pure parts: the notify policy, budget crossings, the signature and the
receiver's recipe, back-off, the events' content (never a secret)."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest

from gatekeeper import Gatekeeper, MemoryStore
from gatekeeper.budgets import EXHAUSTED, WARNING, crossings, scope_of, window_of
from gatekeeper.errors import ConfigError, PolicyError
from gatekeeper.limits.plan import CounterAnswer, build_plan
from gatekeeper.policy.canonical import canonical
from gatekeeper.policy.fields import Fields
from gatekeeper.policy.limits import load_limits
from gatekeeper.policy.load import compile_policy
from gatekeeper.policy.notify import EVENTS, KEY_SUSPENDED
from gatekeeper.webhook_events import budget_event, key_event
from gatekeeper.webhook_signature import sign_webhook, verify_webhook
from gatekeeper.webhooks import Notifier, backoff, resolve_targets
from tests.conftest import PEPPER, Recorder

SECRET_ENV = "GK_TEST_HOOK_SECRET"
SECRET = "whsec-0123456789abcdef-test"
NOW = 1_764_500_000.0  # 2025-11-30


def policy(notify: Any) -> dict[str, Any]:
    return {"tenants": {"acme": {"notify": notify}}}


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        compile_policy(data)
    return [str(e) for e in caught.value.errors]


def test_a_notify_target_compiles_and_shows_only_its_endpoint() -> None:
    url = "https://hooks.example.com/services/T000/B000/s3cr3tT0k3n?x=1"
    compiled = compile_policy(policy({"url": url, "secret_env": SECRET_ENV}))
    target = compiled.tenants["acme"].notify
    assert target is not None and target.url == url
    assert target.endpoint.startswith("https://hooks.example.com/#")
    assert target.events == frozenset(EVENTS)
    assert "s3cr3t" not in repr(compiled) and "s3cr3t" not in target.endpoint
    assert "s3cr3t" not in json.dumps(canonical(compiled))


@pytest.mark.parametrize(("notify", "field", "says"), [
    ({"url": "ftp://h/x", "secret_env": SECRET_ENV}, "notify.url", "https://"),
    ({"url": "http://hooks.example.com/x", "secret_env": SECRET_ENV}, "notify.url",
     "loopback"),
    ({"url": "https://u:p@h.example/x", "secret_env": SECRET_ENV}, "notify.url", "password"),
    ({"url": "https://h.example/x", "secret_env": "not a name"}, "notify.secret_env",
     "environment variable"),
    ({"url": "https://h.example/x"}, "notify.secret_env", "required"),
    ({"secret_env": SECRET_ENV}, "notify.url", "required"),
    ({"url": "https://h.example/x", "secret_env": SECRET_ENV, "events": ["budget.90"]},
     "notify.events[0]", "must be one of"),
    ({"url": "https://h.example/x", "secret_env": SECRET_ENV, "secret": "x"},
     "notify.secret", "not a known field"),
])
def test_a_wrong_notify_section_is_named_by_field(notify: dict[str, Any], field: str,
                                                 says: str) -> None:
    found = problems(policy(notify))
    assert any(f"tenants.acme.{field}" in p and says in p for p in found), found


def test_a_wrong_url_is_shown_up_to_its_host_only() -> None:
    found = problems(policy({"url": "http://hooks.example.com/T0/s3cr3t?token=abc",
                             "secret_env": SECRET_ENV}))
    assert "hooks.example.com" in found[0] and "s3cr3t" not in found[0] \
        and "abc" not in found[0]


def test_http_is_accepted_for_loopback_only() -> None:
    for url in ("http://127.0.0.1:9000/hook", "http://localhost/hook", "http://[::1]:8/h"):
        assert compile_policy(policy({"url": url, "secret_env": SECRET_ENV}))


def test_the_secret_comes_from_the_environment_and_is_never_shown() -> None:
    compiled = compile_policy(policy({"url": "https://h.example/x", "secret_env": SECRET_ENV}))
    targets = resolve_targets(compiled, {SECRET_ENV: SECRET})
    assert targets["acme"].secret == SECRET.encode()
    with pytest.raises(PolicyError) as caught:
        resolve_targets(compiled, {})
    assert "tenants.acme.notify.secret_env" in str(caught.value)
    assert SECRET_ENV not in str(caught.value)  # a name given in a *_env field is hidden
    with pytest.raises(PolicyError) as caught:
        resolve_targets(compiled, {SECRET_ENV: "short"})
    assert "5 bytes; at least 16" in str(caught.value) and "short" not in str(caught.value)


# --- budgets -------------------------------------------------------------------------------

def quota_plan(limits: dict[str, Any], cost: int = 1) -> Any:
    return build_plan("acme", "kAbCdEfGhIjKl", None, load_limits(Fields(limits, "l", [])),
                      cost, now=NOW)


def answer(remaining: int, allowed: bool = True) -> CounterAnswer:
    return CounterAnswer(allowed, remaining, 60.0, 0.0 if allowed else 60.0)


def test_only_the_request_that_carries_a_quota_past_80_percent_reports_it() -> None:
    plan = quota_plan({"daily_requests": 10})
    marks = [[c.mark for c in crossings(plan, [answer(10 - used)])] for used in range(1, 11)]
    assert marks == [[], [], [], [], [], [], [], [WARNING], [], [EXHAUSTED]]


def test_a_large_charge_reports_both_marks_and_a_refusal_reports_exhausted() -> None:
    plan = quota_plan({"daily_tokens": 1000}, cost=900)
    assert [c.mark for c in crossings(plan, [answer(0)])] == [WARNING, EXHAUSTED]
    refused = crossings(plan, [answer(50, allowed=False)])
    assert [(c.mark, c.used) for c in refused] == [(EXHAUSTED, 950)]


def test_rates_and_client_counters_are_not_budgets_and_a_refused_plan_charged_nothing() -> None:
    plan = build_plan("acme", "kAbCdEfGhIjKl", None, load_limits(Fields(
        {"requests": "10/minute", "daily_requests": 10, "per_tenant": {"monthly_requests": 10}},
        "l", [])), now=NOW)
    assert [scope_of(c) for c in plan] == ["key", "key", "tenant"]
    # the rate refuses: nothing was charged, so the quotas at 8 crossed nothing
    assert crossings(plan, [answer(0, allowed=False), answer(2), answer(2)]) == []
    found = crossings(plan, [answer(0), answer(2), answer(5)])
    assert [(scope_of(c.counter), c.mark) for c in found] == [("key", WARNING)]
    assert window_of(plan[1]) == "2025-11-30" and window_of(plan[2]) == "2025-11"


def test_a_budget_event_names_the_key_id_and_window_never_a_storage_key() -> None:
    plan = quota_plan({"daily_requests": 10})
    crossing = crossings(plan, [answer(2)])[0]
    found = budget_event("acme", "kAbCdEfGhIjKl", crossing, NOW)
    body = json.loads(found.body)
    assert body["type"] == "budget.warning" and body["key_id"] == "AbCdEfGhIjKl"
    assert body["data"] == {"scope": "key", "unit": "requests", "window": "2025-11-30",
                            "limit": 10, "used": 8, "percent": 80}
    assert "gk:" not in found.body.decode()
    # the same crossing seen by another replica carries the same id (receivers dedupe)
    assert budget_event("acme", "kAbCdEfGhIjKl", crossing, NOW + 5).id == found.id
    assert key_event(KEY_SUSPENDED, "acme", "AbCdEfGhIjKl", NOW).id != \
        key_event(KEY_SUSPENDED, "acme", "AbCdEfGhIjKl", NOW).id


# --- signature -----------------------------------------------------------------------------

def test_the_signature_verifies_with_the_documented_recipe() -> None:
    body = b'{"id":"evt_1","type":"key.suspended"}'
    header = sign_webhook(SECRET.encode(), int(NOW), body)
    # the README's recipe, written out as a receiver in any language would
    parts = dict(part.split("=", 1) for part in header.split(","))
    expected = hmac.new(SECRET.encode(), parts["t"].encode() + b"." + body,
                        hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, parts["v1"])
    assert abs(NOW - int(parts["t"])) <= 300
    assert verify_webhook(SECRET.encode(), header, body, NOW + 10)


@pytest.mark.parametrize("change", ["body", "secret", "stale", "future", "garbage", "none",
                                    "unicode"])
def test_a_wrong_or_stale_signature_does_not_verify(change: str) -> None:
    body = b'{"id":"evt_1"}'
    header: str | None = sign_webhook(SECRET.encode(), int(NOW), body)
    secret, now = SECRET.encode(), NOW
    if change == "body":
        body += b" "
    elif change == "secret":
        secret = b"another-secret-0123456789"
    elif change == "stale":
        now = NOW + 301
    elif change == "future":
        now = NOW - 301
    elif change == "garbage":
        header = "t=abc,v1=zz"
    elif change == "none":
        header = None
    else:
        header = f"t={int(NOW)},v1=é"
    assert not verify_webhook(secret, header, body, now)


def test_back_off_doubles_with_jitter_up_to_its_cap() -> None:
    low = [backoff(n, 0.5, 4.0, lambda: 0.0) for n in range(1, 7)]
    high = [backoff(n, 0.5, 4.0, lambda: 1.0) for n in range(1, 7)]
    assert low == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    assert high == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert all(high[i] <= low[i + 1] or low[i + 1] == 2.0 for i in range(5))


def test_a_reload_needs_every_secret_and_swaps_the_targets(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    first = policy({"url": "https://a.example/x", "secret_env": SECRET_ENV})
    gk = Gatekeeper(Recorder(), compile_policy(first), store=MemoryStore(), pepper=PEPPER)
    assert gk.notifier.targets["acme"].url == "https://a.example/x"
    gk.reload(compile_policy(policy({"url": "https://b.example/x", "secret_env": SECRET_ENV})))
    assert gk.notifier.targets["acme"].url == "https://b.example/x"
    unset = policy({"url": "https://c.example/x", "secret_env": "GK_TEST_UNSET_SECRET"})
    with pytest.raises(PolicyError, match=r"tenants\.acme\.notify\.secret_env"):
        gk.reload(compile_policy(unset))
    assert gk.notifier.targets["acme"].url == "https://b.example/x"  # the old one stays
    assert gk.metrics.registry.get_sample_value("gatekeeper_policy_reload_errors_total") == 1
    with pytest.raises(PolicyError):  # and a server does not start without it
        Gatekeeper(Recorder(), compile_policy(unset), store=MemoryStore(), pepper=PEPPER)


@pytest.mark.parametrize("setting", ["attempts", "queue_size", "concurrency", "timeout"])
def test_notifier_settings_must_be_positive(setting: str) -> None:
    with pytest.raises(ConfigError, match=setting):
        settings: dict[str, Any] = {setting: 0}
        Notifier(**settings)
