"""Property-based fuzzing of request bodies for tenants whose requests are read: one with
``request:`` rules and ``limits:`` with tokens, one with a token limit alone (estimated from
the body without parsing it when small). Invalid JSON, huge and non-finite numbers, deep
nesting, non-UTF-8, repeated keys, wrong types, content types and lengths that lie, bodies
split across messages.

The same properties as every request: an answer, never an exception, no 5xx but a documented
503, a refused body never reaches the app, every refusal in OpenAI's error shape.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz import strategies as s
from tests.fuzz.harness import Rig, check, examples, rig

PATHS = st.sampled_from(["/v1/chat/completions", "/v1/completions", "/v1/embeddings",
                         "/v1/responses", "/v1/models", "/v1/audio/transcriptions"])
CONTENT_TYPES = st.sampled_from([
    b"application/json", b"application/json", b"application/json; charset=utf-8",
    b"Application/JSON", b"application/vnd.api+json", b"text/plain",
    b"multipart/form-data; boundary=x", b"application/x-www-form-urlencoded", b"", b"\xff",
    b"application/json; charset=latin-1", None])


@pytest.fixture(scope="module")
def fuzz_rig() -> Iterator[Rig]:
    with rig() as made:
        yield made


def test_hostile_bodies_get_clear_answers_and_refusals_never_reach_the_app(
        fuzz_rig: Rig) -> None:
    codes: Counter[str] = Counter()

    @examples(1000)
    @given(st.data())
    def case(data: st.DataObject) -> None:
        tenant = data.draw(st.sampled_from(["metered", "metered", "tokens", "acme"]))
        headers = [(b"host", b"api.test"),
                   (b"authorization", b"Bearer " + fuzz_rig.keys[tenant].encode())]
        body = data.draw(s.DOCUMENT | s.RAW_BODY)
        content_type = data.draw(CONTENT_TYPES)
        if content_type is not None:
            headers.append((b"content-type", content_type))
        length = data.draw(st.sampled_from(["true", "true", "none", "short", "long", "junk"]))
        if length != "none":
            value = {"true": str(len(body)).encode(), "short": str(len(body) // 2).encode(),
                     "long": b"99999999999999999999", "junk": b"12, 13"}[length]
            headers.append((b"content-length", value))
        pieces = data.draw(s.chunks(st.just(body)))
        method, path = data.draw(st.sampled_from(["POST", "POST", "PUT", "GET"])), data.draw(PATHS)
        outcome = fuzz_rig.request(method, path, headers, chunks=pieces)
        check(outcome, (tenant, method, path, headers, body[:300], len(body), len(pieces)))
        codes[outcome.decision.reason.code if outcome.decision else "(public)"] += 1

    case()
    # every body refusal is reached, and good bodies still pass
    assert {"ok", "body_invalid", "body_not_json", "body_too_large", "model_not_allowed",
            "field_not_allowed", "max_tokens_too_large", "n_too_large"} <= set(codes), codes
