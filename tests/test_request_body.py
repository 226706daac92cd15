"""``read_request``: every request-policy rule, its boundaries, the parse's strictness, the token
estimate for each API shape, and the ``include_usage`` rewrite."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from gatekeeper import reasons
from gatekeeper.policy.request_policy import NO_REQUEST_RULES, RequestPolicy
from gatekeeper.reasons import Reason, Refusal
from gatekeeper.request_body import (
    NO_BODY,
    BodyFacts,
    is_json_type,
    parse_json_object,
    read_request,
    with_include_usage,
)
from gatekeeper.token_estimate import MAX_WALK, path_completes, prompt_tokens

JSON = "application/json"
RULES = RequestPolicy(models=("gpt-4o-mini", "gpt-4o*", "text-embedding-3-*"), max_tokens=4096,
                      max_n=2, forbidden_fields=frozenset({"logit_bias", "tools"}))


def body(document: Any) -> bytes:
    return json.dumps(document).encode()


def facts(raw: bytes, rules: RequestPolicy = NO_REQUEST_RULES, content_type: str | None = JSON,
          *, parse: bool = True, completes: bool = True) -> BodyFacts:
    found = read_request(raw, content_type, rules, parse=parse, completes=completes)
    assert isinstance(found, BodyFacts), found
    return found


def refused(raw: bytes, rules: RequestPolicy = RULES, content_type: str | None = JSON,
            *, parse: bool = False) -> Refusal:
    found = read_request(raw, content_type, rules, parse=parse)
    assert isinstance(found, Refusal), found
    return found


def chat(**fields: Any) -> bytes:
    return body({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
                 **fields})


# --- what is read at all -------------------------------------------------------------------

def test_a_body_no_rule_and_no_estimate_needs_is_not_parsed() -> None:
    assert read_request(b"{not json", JSON, NO_REQUEST_RULES, parse=False) is NO_BODY


def test_an_empty_body_has_nothing_to_refuse() -> None:
    assert read_request(b"", JSON, RULES, parse=True) is NO_BODY


@pytest.mark.parametrize(("limit", "size", "passes"), [(100, 100, True), (100, 101, False)])
def test_the_body_limit_is_inclusive(limit: int, size: int, passes: bool) -> None:
    rules = RequestPolicy(max_body_bytes=limit, body_limit_set=True)
    raw = b'{"a":"' + b"x" * (size - 8) + b'"}'
    assert len(raw) == size
    found = read_request(raw, JSON, rules, parse=False)
    if passes:
        assert found is NO_BODY
    else:
        assert isinstance(found, Refusal) and found.reason is reasons.BODY_TOO_LARGE
        assert found.reason.status == 413 and found.detail == "101 bytes"


def test_the_default_body_limit_applies_whenever_the_body_is_read() -> None:
    raw = b" " * ((1 << 20) + 1)
    assert refused(raw, NO_REQUEST_RULES, parse=True).reason is reasons.BODY_TOO_LARGE


# --- a strict parse ------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "detail"), [
    (b"{not json", "not JSON"),
    (b'{"model": "gpt-4o-mini"', "not JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b'{"model": "gpt-4o-\xc3"}', "not UTF-8"),
    (b"[]", "not a JSON object"),
    (b'"gpt-4o-mini"', "not a JSON object"),
    (b"null", "not a JSON object"),
    (b"   ", "not JSON"),
    (b'{"max_tokens": NaN}', "not JSON"),
    (b'{"max_tokens": -Infinity}', "not JSON"),
    (b'{"max_tokens": 1' + b"0" * 5000 + b"}", "not JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
    (b'{"model": "gpt-4o-mini", "model": "o1-pro"}', "repeats the key 'model'"),
    (b'{"a": {"b": 1, "b": 2}}', "repeats the key 'b'"),
])
def test_a_json_body_that_is_not_one_clean_object_is_invalid(raw: bytes, detail: str) -> None:
    found = refused(raw, NO_REQUEST_RULES, parse=True)
    assert found.reason is reasons.BODY_INVALID and found.reason.status == 400
    assert found.detail == detail


def test_a_byte_order_mark_and_surrounding_whitespace_are_tolerated() -> None:
    assert facts(b"\xef\xbb\xbf \n" + chat() + b"\n", RULES).model == "gpt-4o-mini"


@pytest.mark.parametrize(("content_type", "is_json"), [
    (None, True), ("", True), ("application/json", True),
    ("Application/JSON; charset=utf-8", True), ("application/vnd.api+json", True),
    ("text/plain", False), ("multipart/form-data; boundary=x", False),
    ("application/x-www-form-urlencoded", False), ("text/json+plain", False),
])
def test_json_by_media_type(content_type: str | None, is_json: bool) -> None:
    assert is_json_type(content_type) is is_json


def test_a_body_a_rule_cannot_read_is_refused_not_passed() -> None:
    upload = (b"--x\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n"
              b"--x--\r\n")
    found = refused(upload, RULES, "multipart/form-data; boundary=x")
    assert found.reason is reasons.BODY_NOT_JSON and found.reason.status == 415
    assert found.detail.startswith("content-type 'multipart/form-data; boundary=x'")


def test_json_sent_under_another_type_is_still_checked() -> None:
    """An upstream that parses any body as JSON must not be handed an unchecked one."""
    found = refused(chat(model="o1-pro"), RULES, "text/plain")
    assert found.reason is reasons.MODEL_NOT_ALLOWED


def test_an_upload_passes_when_only_the_estimate_is_wanted() -> None:
    found = facts(b"--x\r\n...binary...", NO_REQUEST_RULES, "multipart/form-data; boundary=x")
    assert (found.prompt_tokens, found.completion_tokens, found.document) == (0, 1024, None)


def test_json_under_another_type_is_estimated_as_json() -> None:
    found = facts(b' {"prompt": "' + b"a" * 40 + b'", "max_tokens": 5}', NO_REQUEST_RULES,
                  "text/plain")
    assert (found.prompt_tokens, found.completion_tokens) == (10, 5)
    broken = facts(b'{"prompt": ', NO_REQUEST_RULES, "text/plain")
    assert (broken.prompt_tokens, broken.completion_tokens) == (0, 1024)


# --- the rules -----------------------------------------------------------------------------

@pytest.mark.parametrize("field", ["logit_bias", "tools"])
def test_a_forbidden_field_is_refused_and_named_in_the_detail(field: str) -> None:
    found = refused(chat(**{field: {"x": 1}}))
    assert found.reason is reasons.FIELD_NOT_ALLOWED and found.reason.status == 403
    assert found.detail == f"field {field}"


def test_a_forbidden_field_set_to_null_is_absent() -> None:
    assert facts(chat(tools=None, logit_bias=None), RULES).model == "gpt-4o-mini"


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-4o", "gpt-4o-2024-08-06",
                                   "text-embedding-3-large"])
def test_allowed_models_pass(model: str) -> None:
    assert facts(chat(model=model), RULES).model == model


@pytest.mark.parametrize("model", ["gpt-4", "o1-pro", "GPT-4o-mini", "dall-e-3", ""])
def test_other_models_are_refused_without_echoing_the_allowed_list(model: str) -> None:
    found = refused(chat(model=model))
    assert found.reason is reasons.MODEL_NOT_ALLOWED and found.reason.status == 403
    assert found.detail == f"model {model!r}"
    assert b"gpt-4o" not in found.reason.body and b"embedding" not in found.reason.body


def test_a_long_model_name_is_cut_in_the_detail_and_matches_no_glob() -> None:
    found = refused(chat(model="gpt-4o" + "m" * 5000))
    assert len(found.detail) < 80 and found.detail.endswith("...")


def test_a_model_that_is_not_a_string_is_invalid_under_a_models_rule_only() -> None:
    found = refused(chat(model=["gpt-4o-mini", "o1-pro"]))
    assert found.reason is reasons.BODY_INVALID and found.detail == "model is not a string"
    assert facts(chat(model=7), RequestPolicy(max_n=1)).model is None


def test_a_body_without_a_model_passes_the_models_rule() -> None:
    assert facts(body({"messages": []}), RULES).model is None


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens", "max_output_tokens"])
def test_max_tokens_ceiling_is_inclusive_on_each_field(field: str) -> None:
    assert facts(chat(**{field: 4096}), RULES).max_tokens == 4096
    found = refused(chat(**{field: 4097}))
    assert found.reason is reasons.MAX_TOKENS_TOO_LARGE and found.reason.status == 400
    assert found.detail == f"{field} 4097 over 4096"


def test_every_max_tokens_field_is_checked_and_the_largest_is_the_fact() -> None:
    found = refused(chat(max_tokens=10, max_completion_tokens=5000))
    assert found.detail == "max_completion_tokens 5000 over 4096"
    assert facts(chat(max_tokens=10, max_completion_tokens=300), RULES).max_tokens == 300


@pytest.mark.parametrize("value", ["99999", "4096", True, 4096.5, [4096], {"v": 1}])
def test_a_ceiling_refuses_values_that_are_not_whole_numbers(value: object) -> None:
    """A lax validator upstream (pydantic) reads ``"99999"`` as 99999: never pass it unchecked."""
    found = refused(chat(max_tokens=value))
    assert found.reason is reasons.BODY_INVALID
    assert found.detail == "max_tokens is not a whole number"


def test_a_whole_float_is_a_whole_number_and_a_huge_value_is_not_echoed() -> None:
    assert facts(chat(max_tokens=4096.0), RULES).max_tokens == 4096
    found = refused(chat(max_tokens=10**40))
    assert found.detail == "max_tokens over 1000000000000 over 4096"


def test_without_a_ceiling_odd_values_are_ignored_for_the_estimate() -> None:
    found = facts(chat(max_tokens="99999", n="3"))
    assert (found.max_tokens, found.n, found.completion_tokens) == (None, 1, 1024)


@pytest.mark.parametrize("field", ["n", "best_of"])
def test_n_ceiling_is_inclusive(field: str) -> None:
    assert facts(chat(**{field: 2}), RULES).n == 2
    found = refused(chat(**{field: 3}))
    assert found.reason is reasons.N_TOO_LARGE and found.reason.status == 400
    assert found.detail == f"{field} 3 over 2"
    assert refused(chat(**{field: "2"})).reason is reasons.BODY_INVALID


def test_checks_run_in_a_fixed_order_forbidden_then_model_then_sizes() -> None:
    assert refused(chat(tools=[1], logit_bias={"1": 1})).detail == "field logit_bias"
    everything = chat(model="o1-pro", tools=[], max_tokens=10**6, n=9)
    assert refused(everything).reason is reasons.FIELD_NOT_ALLOWED
    assert refused(chat(model="o1-pro", max_tokens=10**6)).reason is reasons.MODEL_NOT_ALLOWED


@pytest.mark.parametrize("reason", [reasons.BODY_TOO_LARGE, reasons.BODY_INVALID,
                                    reasons.BODY_NOT_JSON, reasons.MODEL_NOT_ALLOWED,
                                    reasons.FIELD_NOT_ALLOWED, reasons.MAX_TOKENS_TOO_LARGE,
                                    reasons.N_TOO_LARGE])
def test_body_reasons_are_in_the_table_with_openai_error_bodies(reason: Reason) -> None:
    assert reason in reasons.REFUSALS and reason.stage == "body"
    error = json.loads(reason.body)["error"]
    assert error["code"] == reason.code and error["type"] == reasons.ERROR_TYPES[reason.status]


# --- the facts -----------------------------------------------------------------------------

def test_stream_usage_and_user_facts() -> None:
    found = facts(chat(stream=True, stream_options={"include_usage": True}, user="u-42"))
    assert (found.stream, found.include_usage, found.user) == (True, True, "u-42")
    plain = facts(chat(stream="true", stream_options={"include_usage": 1}, user=42))
    assert (plain.stream, plain.include_usage, plain.user) == (False, False, None)
    assert facts(body({"input": "x", "safety_identifier": "h-1"})).user == "h-1"


def test_rules_without_parse_skip_the_estimate() -> None:
    found = facts(chat(max_tokens=100), RULES, parse=False)
    assert (found.prompt_tokens, found.completion_tokens) == (0, 100)


# --- the estimate --------------------------------------------------------------------------

def test_chat_estimate_counts_text_content_parts_and_tool_arguments() -> None:
    document = {"model": "gpt-4o-mini", "max_tokens": 50, "n": 2, "messages": [
        {"role": "system", "content": "a" * 40},                                   # 40 chars
        {"role": "user", "content": [{"type": "text", "text": "b" * 20},             # 20 chars
                                     {"type": "image_url", "image_url": {"url": "x" * 999}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "function": {"name": "f", "arguments": "c" * 20}}]},  # 20
        {"role": "tool", "content": "d" * 1}]}                                          # 1
    found = facts(body(document))
    assert found.prompt_tokens == 4 * 4 + 21  # 4 messages, ceil(81 / 4)
    assert found.completion_tokens == 100 and found.tokens == 137


def test_completions_estimate_for_strings_and_token_arrays() -> None:
    assert facts(body({"prompt": "a" * 9})).prompt_tokens == 3
    assert facts(body({"prompt": ["a" * 4, "b" * 4]})).prompt_tokens == 2
    assert facts(body({"prompt": [1, 2, 3, 4, 5]})).prompt_tokens == 5
    assert facts(body({"prompt": [[1, 2], [3, 4, 5]]})).prompt_tokens == 5


def test_embeddings_estimate_has_no_completion() -> None:
    found = facts(body({"model": "text-embedding-3-small", "input": ["a" * 8, [1, 2, 3]]}),
                  completes=path_completes("/v1/embeddings"))
    assert (found.prompt_tokens, found.completion_tokens) == (5, 0)


def test_responses_estimate_counts_input_items_instructions_and_max_output_tokens() -> None:
    document = {"model": "gpt-4o", "instructions": "i" * 8, "max_output_tokens": 300,
                "input": [{"role": "user", "content": [{"type": "input_text", "text": "t" * 8}]},
                          {"type": "function_call_output", "call_id": "c", "output": "o" * 8}]}
    found = facts(body(document))
    assert found.prompt_tokens == 2 * 4 + 6 and found.completion_tokens == 300
    assert facts(body({"input": "x" * 10})).prompt_tokens == 3


def test_the_completion_default_comes_from_the_policy_and_never_goes_negative() -> None:
    rules = RequestPolicy(default_max_tokens=256)
    assert facts(chat(n=3), rules).completion_tokens == 768
    assert facts(chat(max_tokens=-1)).completion_tokens == 0
    assert facts(chat(n=0)).n == 1


def test_a_huge_body_is_walked_a_bounded_number_of_steps() -> None:
    raw = json.dumps({"input": ["ab"] * (MAX_WALK * 15)}, separators=(",", ":")).encode()
    start = time.perf_counter()
    found = facts(raw)
    assert time.perf_counter() - start < 1.0
    assert found.prompt_tokens == -(-len(raw) // 4)  # capped: the body's size / 4
    assert prompt_tokens({"input": ["ab"] * MAX_WALK}, 0) == -(-2 * MAX_WALK // 4)


def test_a_long_token_array_is_counted_without_walking_it() -> None:
    assert prompt_tokens({"input": [7] * (MAX_WALK * 10)}, 0) == MAX_WALK * 10


@pytest.mark.parametrize(("path", "completes"), [
    ("/v1/chat/completions", True), ("/v1/embeddings", False), ("/v1/embeddings/", False),
    ("/openai/deployments/x/embeddings", False), ("/v1/moderations", False),
    ("/v1/responses", True), ("", True)])
def test_path_completes(path: str, completes: bool) -> None:
    assert path_completes(path) is completes


# --- include_usage -------------------------------------------------------------------------

def rewrite(raw: bytes) -> bytes | None:
    found = facts(raw, RequestPolicy(ask_usage=True), parse=False)
    return with_include_usage(raw, found.document)


def test_include_usage_is_spliced_in_keeping_every_other_byte() -> None:
    raw = b' \n{"model": "gpt-4o-mini", "stream": true, "messages": [], "temperature": 0.1}'
    new = rewrite(raw)
    assert new is not None
    assert new.replace(b'"stream_options":{"include_usage":true},', b"", 1) == raw
    assert json.loads(new) == {**json.loads(raw), "stream_options": {"include_usage": True}}


@pytest.mark.parametrize("options", [None, {}, {"other": 1}, {"include_usage": None}])
def test_include_usage_is_added_beside_what_the_client_set(options: object) -> None:
    raw = chat(stream=True, stream_options=options, temperature=1e-7, extra="é\u2028")
    new = rewrite(raw)
    assert new is not None
    expected = {**(options or {}), "include_usage": True}  # type: ignore[dict-item]
    assert json.loads(new) == {**json.loads(raw), "stream_options": expected}
    assert list(json.loads(new)) == list(json.loads(raw))  # field order kept


@pytest.mark.parametrize("raw", [
    chat(),                                                    # not streaming
    chat(stream="yes"),
    chat(stream=True, stream_options={"include_usage": False}),  # the client said no
    chat(stream=True, stream_options={"include_usage": True}),
    chat(stream=True, stream_options="on"),                    # the upstream answers that
    body({"model": "gpt-4o", "stream": True, "input": "hi"}),   # Responses: usage comes anyway
])
def test_include_usage_changes_nothing_else(raw: bytes) -> None:
    assert rewrite(raw) is None


def test_include_usage_rewrites_a_lone_surrogate_escape_without_crashing() -> None:
    raw = b'{"stream": true, "stream_options": null, "messages": [{"content": "\\ud800 \xc3\xa9"}]}'
    new = rewrite(raw)
    assert new is not None and new.isascii()
    assert json.loads(new)["messages"] == json.loads(raw)["messages"]


def test_include_usage_needs_a_parsed_body() -> None:
    assert with_include_usage(chat(stream=True), None) is None
    assert rewrite(b'{"stream": true, "prompt": "x"}') == (
        b'{"stream_options":{"include_usage":true},"stream": true, "prompt": "x"}')


def test_quick_read_takes_the_largest_declared_max_tokens_and_n_without_parsing() -> None:
    from gatekeeper.request_body import QUICK_LIMIT, quick_read

    body = b'{"model":"m","n":2,"max_tokens":16,"tools":[{"max_completion_tokens":40}]}'
    found = quick_read(body, 1024, completes=True)
    assert found is not None
    assert (found.max_tokens, found.n, found.completion_tokens) == (40, 2, 80)
    assert found.prompt_tokens == -(-len(body) // 4)
    # a key spelled with a \u escape could hide: such a body must be parsed
    assert quick_read(b'{"max\\u005ftokens": 99999}', 1024, completes=True) is None
    assert quick_read(b"{" + b" " * QUICK_LIMIT + b"}", 1024, completes=True) is None
    # a value inside a string cannot pass for a key: its quotes are escaped
    fake = b'{"messages":[{"content":"say \\"max_tokens\\": 99999"}]}'
    quiet = quick_read(fake, 1024, completes=True)
    assert quiet is not None and quiet.max_tokens is None and quiet.completion_tokens == 1024
    assert quick_read(b'{"input":"x"}', 1024, completes=False).completion_tokens == 0  # type: ignore[union-attr]


@pytest.mark.parametrize("messages", [
    [{"role": "user", "content": "hi"}],
    [{"role": "system", "content": "be brief " * 9}, {"role": "user", "content": "x" * 401}],
    [{"role": "user", "content": ""}] * 7,
    [],
])
def test_plain_chat_messages_are_estimated_as_the_full_walk_estimates_them(
        messages: list[dict[str, Any]]) -> None:
    """``prompt_tokens`` takes a shortcut for messages of plain text; a tool call in one of
    them sends it down the full walk, which must agree wherever both apply."""
    plain = prompt_tokens({"messages": messages}, 1)
    chars = sum(len(m["content"]) for m in messages)
    assert plain == 4 * len(messages) + -(-chars // 4)
    walked = prompt_tokens({"messages": [*messages, {"role": "assistant", "content": "",
                                                     "tool_calls": []}]}, 1)
    assert walked == plain + 4  # one more message, no text: the walk counts the same


@pytest.mark.parametrize(("raw", "problem"), [
    (b'{"model": "m"}', ""), (b'{"model": "m"} \n\t\r', ""), (b' \n{"model": "m"}', ""),
    (b'{"model": "m"} x', "not JSON"), (b'{"model": "m"}{}', "not JSON"),
    (b'{"model": "m"', "not JSON"), (b'{"a": 1, "a": 2}', "repeats the key 'a'"),
    (b'{"a": NaN}', "not JSON"), (b'[1]', "not a JSON object"), (b"", "not JSON"),
])
def test_a_body_is_one_json_object_and_nothing_else(raw: bytes, problem: str) -> None:
    document, found = parse_json_object(raw)
    assert found == problem
    assert (document == {"model": "m"}) is (problem == "")


def _careful(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    """What ``parse_json_object`` answered before its fast path: every object through a
    hook that refuses a repeated key."""
    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        names = [name for name, _ in pairs]
        for name in names:
            if names.count(name) > 1:
                raise KeyError(name)
        return dict(pairs)

    try:
        document = json.loads(raw.decode("utf-8").removeprefix("\ufeff"),
                              object_pairs_hook=unique, parse_constant=_no_constant)
    except KeyError as exc:
        return None, f"repeats the key {exc.args[0]!r}"
    except ValueError:
        return None, "not JSON"
    return (document, "") if isinstance(document, dict) else (None, "not a JSON object")


def _no_constant(name: str) -> None:
    raise ValueError(name)


def _nested(depth: int, inner: str) -> bytes:
    return ('{"a":' * depth + inner + "}" * depth).encode()


@pytest.mark.parametrize("raw", [
    chat(), b'{"a": "x", "b": ["x", {"c": "y"}, [["z"]]], "d": {"e": {}}}',
    b'{"a": [{"k": 1}, {"k": 2}]}',  # the same key in two objects: not a repeat
    b'{"a": 1, "b": 2, "a": 3}', b'{"a": [{"k": 1, "k": 1}]}',
    b'{"a": [[{"b": {"c": 1, "c": 2}}]]}',
    b'{"a": "", "": 1, "": 2}', b'{"a\\"": 1, "a\\"": 2}', b'{"a": "\\"x\\": 1", "b": 2}',
    b'{"q": "say \\"hi\\"", "q": "twice"}', b'{"a": 1} ', b'{"a": "\\u0062", "b": 1}',
    _nested(32, '{"b": 1, "b": 2}'), _nested(40, '{"b": 1, "b": 2}'), _nested(40, '{"b": 1}'),
    b'{"a": NaN}', b'{"a": 1,}', b'{"a": 1}{"b": 2}',
])
def test_the_fast_parse_answers_as_the_careful_one(raw: bytes) -> None:
    """Bodies without a backslash are parsed without the repeated-key hook and their keys
    counted instead: the answer is the careful parse's, repeats anywhere included."""
    assert parse_json_object(raw) == _careful(raw)
