"""Limits as the official ``openai`` client meets them, over uvicorn on a real socket: a tight
limit is a ``RateLimitError`` after the client's own retries, a loose one carries OpenAI's
``x-ratelimit-*`` headers, and a stream's final usage chunk is what the tokens cost."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from gatekeeper import Gatekeeper, MemoryStore, key_admin
from gatekeeper.demo.upstream import create_upstream
from gatekeeper.policy.load import compile_policy
from gatekeeper.policy.request_policy import NO_REQUEST_RULES
from gatekeeper.request_body import BodyFacts, quick_read
from tests.conftest import PEPPER
from tests.serving import serving

MESSAGES: Any = [{"role": "user", "content": "hello there"}]
POLICY: dict[str, Any] = {
    "routes": {"protect": ["/v1/*"]},
    "tenants": {
        "tight": {"limits": {"requests": "2/hour"}},
        "loose": {"limits": {"requests": "1000/day", "tokens": "100000/day"}},
        "quota": {"limits": {"daily_requests": 1}},
        "pair": {"limits": {"concurrency": 1}},
        "second": {"limits": {"requests": "1/second"}},
        "strict": {"request": {"models": ["gpt-4o-mini*"], "max_tokens": 256}},
    },
}


@dataclass
class Served:
    base: str
    keys: dict[str, str]
    upstream: Any
    attempts: list[str]
    held: threading.Event
    release: threading.Event

    def client(self, tenant: str, retries: int = 0) -> openai.OpenAI:
        hooks = {"request": [lambda request: self.attempts.append(str(request.url))]}
        return openai.OpenAI(base_url=f"{self.base}/v1", api_key=self.keys[tenant],
                             max_retries=retries, timeout=10.0,
                             http_client=openai.DefaultHttpxClient(event_hooks=hooks))


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    policy = compile_policy(POLICY)
    store = MemoryStore()
    keys = {}
    for tenant in POLICY["tenants"]:
        keys[tenant], _ = asyncio.run(key_admin.create_key(store, PEPPER, policy, tenant,
                                                           time.time()))
    upstream = create_upstream()
    held, release = threading.Event(), threading.Event()

    async def hold(request: Request) -> Response:
        held.set()
        while not release.is_set():
            await asyncio.sleep(0.01)
        return PlainTextResponse("released")

    upstream.router.routes.append(Route("/v1/hold", hold))
    with serving(Gatekeeper(upstream, policy, store=store, pepper=PEPPER)) as base:
        yield Served(base, keys, upstream, [], held, release)


def test_a_tight_limit_is_a_rate_limit_error_and_the_upstream_never_sees_it(
        served: Served) -> None:
    with served.client("tight", retries=2) as client:
        seen = len(served.upstream.state.seen)
        for _ in range(2):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        served.attempts.clear()
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert refused.value.code == "rate_limited"
        retry_after = int(refused.value.response.headers["retry-after"])
        assert 1700 < retry_after <= 1800  # one request of a 2/hour limit is back in 30 min
        # openai's client does not retry when told to wait more than two minutes
        assert len(served.attempts) == 1
        assert len(served.upstream.state.seen) == seen + 2


def test_a_held_slot_is_a_rate_limit_error_after_the_clients_own_retries(
        served: Served) -> None:
    """Concurrency refusals say retry-after 1 s: the client retries twice, each refused while
    the slot is held; once it is given back the next call passes."""
    holding = threading.Thread(target=httpx.get, args=(f"{served.base}/v1/hold",),
                               kwargs={"headers": {"authorization":
                                                   f"Bearer {served.keys['pair']}"},
                                       "timeout": 30})
    holding.start()
    try:
        deadline = time.monotonic() + 10
        while not served.held.is_set():
            assert time.monotonic() < deadline, "the holding request never reached the app"
            time.sleep(0.01)
        with served.client("pair", retries=2) as client:
            served.attempts.clear()
            with pytest.raises(openai.RateLimitError) as refused:
                client.models.list()
            assert refused.value.code == "concurrency_limited"
            assert len(served.attempts) == 3
            served.release.set()
            holding.join(10)
            assert len(client.models.list().data) > 0
    finally:
        served.release.set()
        holding.join(10)


def test_a_short_wait_is_honoured_by_the_clients_retry(served: Served) -> None:
    with served.client("second", retries=2) as client:
        client.models.list()
        served.attempts.clear()
        started = time.monotonic()
        client.models.list()  # refused once with retry-after 1, then allowed
        assert len(served.attempts) == 2
        assert 0.9 < time.monotonic() - started < 5


def test_a_used_up_quota_is_openais_insufficient_quota(served: Served) -> None:
    with served.client("quota") as client:
        client.models.list()
        with pytest.raises(openai.RateLimitError) as refused:
            client.models.list()
        assert refused.value.code == "insufficient_quota"


def _duration(text: str) -> float:
    """OpenAI's reset header (``6m0s``, ``1.5s``, ``20ms``) in seconds."""
    found = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m(?!s))?(?:([\d.]+)s)?(?:(\d+)ms)?", text)
    assert found and text, text
    h, m, s, ms = (float(g or 0) for g in found.groups())
    return h * 3600 + m * 60 + s + ms / 1000


def test_a_loose_limit_passes_with_correct_rate_limit_headers(served: Served) -> None:
    with served.client("loose") as client:
        first = client.chat.completions.with_raw_response.create(model="gpt-4o-mini",
                                                                 messages=MESSAGES)
        used = first.parse().usage.total_tokens  # type: ignore[union-attr]
        second = client.chat.completions.with_raw_response.create(model="gpt-4o-mini",
                                                                  messages=MESSAGES)
        h = second.headers
        assert h["x-ratelimit-limit-requests"] == "1000"
        assert h["x-ratelimit-remaining-requests"] == "998"
        # two requests of a 1000/day limit are back in 2 x 86.4 s, less the time between them
        assert 170 < _duration(h["x-ratelimit-reset-requests"]) <= 172.8
        assert h["x-ratelimit-limit-tokens"] == "100000"
        # the first request's real usage was charged (100000/day refills ~1.16 tokens a second)
        # and this one's estimate reserved: its prompt plus the default max_tokens
        # (the openai client sends compact JSON: the quick estimate counts its bytes / 4)
        body = json.dumps({"messages": MESSAGES, "model": "gpt-4o-mini"},
                          separators=(",", ":")).encode()
        estimate = quick_read(body, NO_REQUEST_RULES.default_max_tokens, completes=True)
        assert isinstance(estimate, BodyFacts) and estimate.tokens > 1000
        remaining = int(h["x-ratelimit-remaining-tokens"])
        expected = 100000 - used - estimate.tokens
        assert expected <= remaining <= expected + 2
        spent = used + estimate.tokens
        assert 0 < _duration(h["x-ratelimit-reset-tokens"]) <= spent * 0.864 + 0.001


def test_a_stream_with_include_usage_is_charged_its_real_usage(served: Served) -> None:
    with served.client("loose") as client:
        before = client.chat.completions.with_raw_response.create(model="gpt-4o-mini",
                                                                  messages=MESSAGES)
        start = int(before.headers["x-ratelimit-remaining-tokens"])
        own = before.parse().usage.total_tokens  # type: ignore[union-attr]
        chunks = list(client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True,
            stream_options={"include_usage": True}))
        usage = chunks[-1].usage
        assert usage is not None and usage.total_tokens > 0
        after = client.chat.completions.with_raw_response.create(model="gpt-4o-mini",
                                                                 messages=MESSAGES)
        remaining = int(after.headers["x-ratelimit-remaining-tokens"])
        expected = start - own - usage.total_tokens
        assert expected <= remaining <= expected + 3


def test_a_disallowed_model_or_an_oversized_max_tokens_is_refused_with_its_code(
        served: Served) -> None:
    seen = len(served.upstream.state.seen)
    with served.client("strict") as client:
        with pytest.raises(openai.PermissionDeniedError) as model:
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert model.value.code == "model_not_allowed"
        assert "gpt-4o-mini" not in model.value.message  # the allowed list is never echoed
        with pytest.raises(openai.BadRequestError) as ceiling:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                           max_tokens=1000)
        assert ceiling.value.code == "max_tokens_too_large"
        assert len(served.upstream.state.seen) == seen
        allowed = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                                 max_tokens=256)
        assert allowed.choices[0].message.content
