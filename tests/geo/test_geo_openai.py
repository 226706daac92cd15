"""The official ``openai`` client, over a real uvicorn socket, against a key bound to Germany:
the client's address is set through a trusted proxy (``X-Forwarded-For`` from loopback)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import openai
import pytest

from gatekeeper import Gatekeeper, MemoryStore, compile_policy, key_admin
from gatekeeper.demo.upstream import create_upstream
from tests.conftest import PEPPER
from tests.serving import serving

MESSAGES: Any = [{"role": "user", "content": "hello there"}]
POLICY = {"routes": {"protect": ["/v1/*"]},
          "client_address": {"trusted_proxies": ["127.0.0.1/32"]},
          "tenants": {"acme": {"countries": {"allow": ["DE", "US"]}}}}


def test_a_key_bound_to_another_country_raises_permission_denied() -> None:
    policy = compile_policy(POLICY)
    store = MemoryStore()
    key, _ = asyncio.run(key_admin.create_key(store, PEPPER, policy, "acme", time.time(),
                                              countries=("DE",)))
    upstream = create_upstream()
    app = Gatekeeper(upstream, policy, store=store, pepper=PEPPER)

    def client(base: str, address: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=10.0,
                             default_headers={"x-forwarded-for": address})

    with serving(app) as base:
        done = client(base, "5.9.0.1").chat.completions.create(  # DE
            model="gpt-4o-mini", messages=MESSAGES)
        assert done.choices[0].message.content is not None
        with pytest.raises(openai.PermissionDeniedError) as caught:
            client(base, "8.8.8.8").chat.completions.create(  # US: the tenant's, not the key's
                model="gpt-4o-mini", messages=MESSAGES)
    assert caught.value.status_code == 403
    assert caught.value.code == "country_not_allowed"
    assert "DE" not in caught.value.message
    assert len(upstream.state.seen) == 1, "the refused request reached the app"
