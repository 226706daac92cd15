"""From per-counter answers to the outcome: the reason, retry-after and OpenAI's headers."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatekeeper import reasons
from gatekeeper.limits.answer import Report, duration, outcome
from gatekeeper.limits.plan import CONCURRENCY, QUOTA, RATE, REQUESTS, TOKENS, Counter
from gatekeeper.store.counters import CounterAnswer, Lease

KEY_RQ = Counter(RATE, "k:rq", "{t:a}", 60, 60.0, 1, REQUESTS)
TENANT_RQ = Counter(RATE, "t:rq", "{t:a}", 600, 60.0, 1, REQUESTS)
KEY_TK = Counter(RATE, "k:tk", "{t:a}", 90_000, 60.0, 500, TOKENS)
SLOTS = Counter(CONCURRENCY, "k:cc", "{t:a}", 4, 600.0, 1, REQUESTS)
DAILY = Counter(QUOTA, "k:dt", "{t:a}", 2_000_000, 86_400.0, 500, TOKENS)


def ok(remaining: int, reset: float, lease: Lease | None = None) -> CounterAnswer:
    return CounterAnswer(True, remaining, reset, 0.0, lease)


def test_allowed_headers_come_from_the_tightest_counter_of_each_unit() -> None:
    lease = Lease("k:cc", 7)
    result = outcome((KEY_RQ, TENANT_RQ, KEY_TK, SLOTS),
                     [ok(59, 1.0), ok(12, 54.0), ok(89_500, 0.333), ok(3, 0.0, lease)])
    assert result.allowed and result.reason is reasons.OK and result.refused is None
    assert dict(result.headers) == {
        b"x-ratelimit-limit-requests": b"600", b"x-ratelimit-remaining-requests": b"12",
        b"x-ratelimit-reset-requests": b"54s",
        b"x-ratelimit-limit-tokens": b"90000", b"x-ratelimit-remaining-tokens": b"89500",
        b"x-ratelimit-reset-tokens": b"333ms"}
    assert result.leases == (lease,)


@pytest.mark.parametrize("remaining", [(59, 12, 89_500), (5, 12, 0), (12, 12, 7), (600, 0, 1)])
def test_the_compiled_report_says_what_outcome_says(remaining: tuple[int, int, int]) -> None:
    """``Report.allowed`` (the allowed requests' path) picks the same tightest counter per
    unit as ``outcome``, ties going to the first in plan order, and the same slots."""
    plan = (KEY_RQ, TENANT_RQ, KEY_TK, SLOTS, DAILY)
    lease = Lease("k:cc", 3)
    answers = [ok(remaining[0], 1.0), ok(remaining[1], 54.0), ok(remaining[2], 0.333),
               ok(3, 0.0, lease), ok(1_000, 9_000.0)]
    expected = outcome(plan, answers)
    headers, leases = Report(plan).allowed(answers)
    assert headers == expected.headers and leases == expected.leases == (lease,)
    assert Report(plan).names == {name for name, _ in headers}


@pytest.mark.parametrize(("counter", "reason"), [
    (KEY_RQ, reasons.RATE_LIMITED), (KEY_TK, reasons.TOKENS_LIMITED),
    (SLOTS, reasons.CONCURRENCY_LIMITED), (DAILY, reasons.QUOTA_EXCEEDED)])
def test_each_kind_of_counter_refuses_with_its_reason(counter: Counter,
                                                      reason: reasons.Reason) -> None:
    result = outcome((counter,), [CounterAnswer(False, 0, 2.0, 1.2)])
    assert not result.allowed and result.reason is reason and result.refused is counter
    headers = dict(result.headers)
    assert headers[b"retry-after"] == b"2" and headers[b"retry-after-ms"] == b"1200"
    assert reason.status == 429 and reason.stage == "store"


def test_the_longest_wait_decides_and_nothing_is_leased() -> None:
    result = outcome((KEY_RQ, KEY_TK, SLOTS), [CounterAnswer(False, 0, 1.0, 0.5),
                                               CounterAnswer(False, 0, 9.0, 8.25), ok(3, 0.0)])
    assert result.refused is KEY_TK and result.retry_after == 8.25
    assert dict(result.headers)[b"retry-after-ms"] == b"8250"
    assert result.leases == ()


def test_a_request_that_can_never_pass_gets_no_retry_after() -> None:
    result = outcome((KEY_TK,), [CounterAnswer(False, 90_000, 0.0, math.inf)])
    assert result.reason is reasons.TOKENS_LIMITED and result.retry_after == math.inf
    assert b"retry-after" not in dict(result.headers)


def test_quota_exceeded_speaks_openai_insufficient_quota() -> None:
    body = json.loads(reasons.QUOTA_EXCEEDED.body)
    assert body["error"]["code"] == "insufficient_quota"
    assert body["error"]["type"] == "insufficient_quota"
    assert reasons.QUOTA_EXCEEDED.code == "quota_exceeded"


@pytest.mark.parametrize(("seconds", "text"), [
    (0.0, b"0s"), (0.0201, b"21ms"), (1.0, b"1s"), (1.5, b"1.5s"), (360.0, b"6m0s"),
    (3723.0, b"1h2m3s"), (86_400.0, b"24h0m0s")])
def test_durations_read_like_openai_s(seconds: float, text: bytes) -> None:
    assert duration(seconds) == text


@given(st.floats(-1.0, 5.0) | st.integers(0, 5000).map(lambda ms: ms / 1000)
       | st.integers(0, 5000).map(lambda ms: ms / 1000 - 0.0005))
def test_durations_under_a_second_round_up_as_math_ceil_does(seconds: float) -> None:
    """``duration`` looks the text up under a second; written out it is ``math.ceil`` of the
    milliseconds, formatted (at 999.5 ms and above: a second)."""
    if seconds <= 0:
        assert duration(seconds) == b"0s"
        return
    ms = math.ceil(seconds * 1000)
    if ms < 1000:
        assert duration(seconds) == b"%dms" % ms
    else:
        whole, rest = divmod(ms, 1000)
        text = f"{whole}.{rest:03d}".rstrip("0").rstrip(".") if whole < 60 else None
        if text is not None:
            assert duration(seconds) == f"{text}s".encode()
