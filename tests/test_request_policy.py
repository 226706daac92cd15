"""A tenant's ``request`` section: what it compiles to, and every bad value named by its field."""

from __future__ import annotations

from typing import Any

import pytest

from gatekeeper import PolicyError, compile_policy
from gatekeeper.policy.request_policy import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_TOKENS,
    GLOBBED,
    MAX_BODY_BYTES,
    MAX_MODEL_NAME,
    NO_REQUEST_RULES,
    RequestPolicy,
)


def rules(section: dict[str, Any]) -> RequestPolicy:
    return compile_policy({"tenants": {"acme": {"request": section}}}).tenants["acme"].request


def errors(section: object) -> dict[str, str]:
    with pytest.raises(PolicyError) as err:
        compile_policy({"tenants": {"acme": {"request": section}}})
    return {e.field: e.problem for e in err.value.errors}


def test_no_section_is_no_rules_and_reads_no_body() -> None:
    request = compile_policy({"tenants": {"acme": {}}}).tenants["acme"].request
    assert request is NO_REQUEST_RULES
    assert request.empty and not request.needs_body and not request.needs_json
    assert request.model_allowed("anything-at-all")
    assert (request.max_body_bytes, request.default_max_tokens) == (DEFAULT_MAX_BODY_BYTES,
                                                                    DEFAULT_MAX_TOKENS)
    assert rules({}) == NO_REQUEST_RULES


def test_a_full_section() -> None:
    request = rules({"models": ["gpt-4o-mini", "gpt-4o*", "text-embedding-3-*"],
                     "max_tokens": 4096, "max_n": 1, "forbidden_fields": ["logit_bias", "tools"],
                     "max_body_bytes": 65536, "default_max_tokens": 512, "ask_usage": True})
    assert request.exact_models == frozenset({"gpt-4o-mini"})
    assert request.model_pattern is not None
    assert (request.max_tokens, request.max_n, request.max_body_bytes,
            request.default_max_tokens, request.ask_usage) == (4096, 1, 65536, 512, True)
    assert request.forbidden_fields == frozenset({"logit_bias", "tools"})
    assert request.needs_json and request.needs_body and not request.empty


@pytest.mark.parametrize(("model", "allowed"), [
    ("gpt-4o-mini", True),
    ("gpt-4o", True),
    ("gpt-4o-2024-08-06", True),
    ("text-embedding-3-small", True),
    ("gpt-4", False),
    ("GPT-4O", False),            # case-sensitive, as model names are
    ("xgpt-4o", False),           # anchored at the start
    ("gpt-4o-mini\n", True),      # matched by the glob gpt-4o*: '*' spans anything
    ("text-embedding-ada-002", False),
    ("", False),
])
def test_models_match_exact_names_and_globs(model: str, allowed: bool) -> None:
    request = rules({"models": ["gpt-4o-mini", "gpt-4o*", "text-embedding-3-*"]})
    assert request.model_allowed(model) is allowed


def test_glob_verdicts_are_remembered_within_bounds_whatever_names_a_client_sends() -> None:
    request = rules({"models": ["gpt-4o*"]})
    huge = "gpt-4o" + "x" * MAX_MODEL_NAME
    assert not request.model_allowed(huge) and huge not in request.globbed
    for i in range(GLOBBED + 50):
        assert request.model_allowed(f"gpt-4o-{i}")
    assert len(request.globbed) == GLOBBED
    assert request.model_allowed("gpt-4o-late") and not request.model_allowed("gpt-5")
    assert request.globbed["gpt-4o-0"] is True


def test_exact_names_only_compile_no_pattern_and_brackets_are_globs() -> None:
    exact = rules({"models": ["gpt-4o-mini", "ft:gpt-4o-mini:acme:custom:abc123"]})
    assert exact.model_pattern is None
    assert exact.model_allowed("ft:gpt-4o-mini:acme:custom:abc123")
    assert not exact.model_allowed("gpt-4o-mini-2024")
    ranged = rules({"models": ["o[13]-mini", "model-?"]})
    assert ranged.model_allowed("o1-mini") and ranged.model_allowed("o3-mini")
    assert not ranged.model_allowed("o2-mini")
    assert ranged.model_allowed("model-a") and not ranged.model_allowed("model-ab")


def test_several_multi_star_globs_compile_into_one_pattern() -> None:
    request = rules({"models": ["gpt-*-mini-*", "text-*-3-*", "@cf/meta/*"]})
    assert request.model_allowed("gpt-4o-mini-2024") and request.model_allowed("text-x-3-y")
    assert request.model_allowed("@cf/meta/llama-3")
    assert not request.model_allowed("gpt-4o-mini") and not request.model_allowed("text-3")
    assert not request.model_allowed("gpt-4o-mini-" + "x" * 300)  # longer than any model


def test_a_single_string_is_a_list_of_one() -> None:
    assert rules({"models": "gpt-4o-mini"}).exact_models == frozenset({"gpt-4o-mini"})


def test_only_an_explicit_body_limit_makes_the_body_needed_without_json() -> None:
    limited = rules({"max_body_bytes": 1024})
    assert limited.needs_body and not limited.needs_json and not limited.empty
    assert limited.body_limit_set and limited.max_body_bytes == 1024
    assert rules({"default_max_tokens": 10}).empty  # only an estimate setting: no rule
    assert rules({"ask_usage": True}).needs_json


def test_bad_values_each_name_their_field() -> None:
    found = errors({
        "models": ["gpt-4o", 7, "has space", ""],
        "max_tokens": 0, "max_n": "one", "forbidden_fields": ["tools", "a.b", None],
        "max_body_bytes": MAX_BODY_BYTES + 1, "default_max_tokens": True, "ask_usage": "yes",
        "max_token": 5})
    assert found == {
        "tenants.acme.request.models[1]": "must be a string",
        "tenants.acme.request.models[2]": "is not a model name or glob",
        "tenants.acme.request.models[3]": "is not a model name or glob",
        "tenants.acme.request.max_tokens": "must be between 1 and 1000000000",
        "tenants.acme.request.max_n": "must be a whole number",
        "tenants.acme.request.forbidden_fields[1]": "is not a top-level field name",
        "tenants.acme.request.forbidden_fields[2]": "must be a string",
        "tenants.acme.request.max_body_bytes": f"must be between 1 and {MAX_BODY_BYTES}",
        "tenants.acme.request.default_max_tokens": "must be a whole number",
        "tenants.acme.request.ask_usage": "must be true or false",
        "tenants.acme.request.max_token": "is not a known field (did you mean max_tokens?)",
    }


def test_an_empty_model_list_is_an_error_not_a_silent_deny_all() -> None:
    assert errors({"models": []}) == {
        "tenants.acme.request.models": "must name at least one model (omit it to allow any)"}


def test_the_section_must_be_a_mapping() -> None:
    assert errors(["gpt-4o"]) == {"tenants.acme.request": "must be a mapping"}
