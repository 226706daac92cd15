"""The body's signals on the live path: when a request rule or a token limit reads the body
anyway, its ``user`` id, model and ``max_tokens`` reach the score; a body nobody reads gives
none."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gatekeeper import Gatekeeper, ManualClock, MemoryStore, compile_policy, key_admin
from gatekeeper.request_body import BODY_FACTS
from gatekeeper.resale.state import KeyState
from gatekeeper.types import Message, Receive, Scope, Send
from tests.conftest import PEPPER, asgi_request

pytestmark = pytest.mark.anyio

T0 = 1_800_000_000.0
PROXY = "203.0.113.9"
"""A reverse proxy: one address, many end users."""


class Scopes:
    """Answers 200 and keeps what the app saw of each scope."""

    def __init__(self) -> None:
        self.body_left: list[bool] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.body_left.append(BODY_FACTS in scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def _policy(tenant: dict[str, Any]) -> dict[str, Any]:
    return {"routes": {"protect": ["/v1/*"]}, "tenants": {"acme": tenant},
            "resale": {"mode": "enforce", "flag_header": True,
                       # end users: nothing up to 10 per address, then a point each (a key
                       # holds 24 at most: DISTINCT_CAP)
                       "signals": {"end_users": {"allow": 10, "weight": 1}},
                       "thresholds": {"flag": 5, "throttle": None, "block": None,
                                      "suspend": None}}}


async def _proxy_traffic(tenant: dict[str, Any], users: int,
                         **fields: Any) -> tuple[list[Message], KeyState, Scopes]:
    """``users`` chat requests, each for another end user, all from the proxy's address."""
    clock = ManualClock(T0)
    store = MemoryStore()
    app = Scopes()
    gk = Gatekeeper(app, compile_policy(_policy(tenant)), store=store, pepper=PEPPER,
                    clock=clock)
    key, record = await key_admin.create_key(store, PEPPER, gk.policy, "acme", T0 - 60)
    last: list[Message] = []
    for i in range(users):
        body = json.dumps({"model": "gpt-4o-mini", "user": f"buyer-{i}",
                           "messages": [{"role": "user", "content": "hi"}], **fields})
        last = await asgi_request(gk, "/v1/chat/completions",
                                  [(b"authorization", f"Bearer {key}".encode()),
                                   (b"content-type", b"application/json")],
                                  method="POST", client=(PROXY, 40000), body=body.encode())
        assert last[0]["status"] == 200
        clock.advance(2.0)
    state = gk.resale.tracker.get(record.key_id)
    assert state is not None
    await gk.shutdown()
    return last, state, app


async def test_many_end_users_behind_one_address_flag_when_a_rule_reads_the_body() -> None:
    sent, state, app = await _proxy_traffic({"request": {"max_tokens": 4096}}, 40)
    assert dict(sent[0]["headers"]).get(b"x-gatekeeper-resale") == b"flag"
    assert state.scored is not None
    assert state.scored.reasons(1)[0].startswith("end_users=")
    assert set(state.seen[5]) == {"gpt-4o-mini"}  # the model, too
    assert app.body_left == [False] * 40  # taken out of the scope before the app ran


async def test_a_body_nobody_reads_gives_no_body_signal() -> None:
    sent, state, _ = await _proxy_traffic({}, 40)
    assert b"x-gatekeeper-resale" not in dict(sent[0]["headers"])
    assert not state.seen[4] and not state.seen[5]  # no end users, no models


async def test_tiny_max_tokens_count_as_probes_live() -> None:
    _, state, _ = await _proxy_traffic({"request": {"max_tokens": 4096}}, 3, max_tokens=1)
    assert state.tiny is not None and len(state.tiny) == 3
