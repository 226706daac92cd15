"""Property-based fuzzing of policy files: random mappings over the policy's own field names,
and a valid policy with one value anywhere in it replaced, removed or joined by a stranger.

Every one either compiles (and then a Gatekeeper starts on it, or refuses with a
GatekeeperError) or raises one PolicyError whose every ConfigError names a field; never
another exception, never a traceback for an operator to read.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from gatekeeper import Gatekeeper, MemoryStore, compile_policy, load_policy
from gatekeeper.errors import ConfigError, GatekeeperError, PolicyError
from tests.conftest import PEPPER, Recorder
from tests.fuzz.harness import POLICY, examples

NAMES = [
    "version", "store", "keys", "cache_ttl", "pepper_env", "pepper_file", "routes", "protect",
    "public", "client_address", "trusted_proxies", "allow_wide_public_proxies", "header",
    "max_hops", "request_tenant", "path_segment", "tenants", "acme", "allowed_networks",
    "disabled", "countries", "allow", "deny", "unknown", "travel", "max_kmh", "action",
    "min_km", "limits", "requests", "tokens", "concurrency", "concurrency_lease",
    "daily_requests", "daily_tokens", "monthly_requests", "monthly_tokens", "daily_spend",
    "monthly_spend", "per_tenant", "per_client", "request", "models", "max_tokens", "max_n",
    "forbidden_fields", "max_body_bytes", "default_max_tokens", "ask_usage", "jwt", "issuers",
    "issuer", "audiences", "algorithms", "jwks", "jwks_url", "jwks_file", "jwks_cache_ttl",
    "public_keys", "secret_env", "tenant_claim", "tenants", "subject_claim", "leeway", "geo",
    "files", "city", "country", "asn", "max_age_days", "cdn_header", "refusals", "conceal",
    "prices", "default", "input", "output"]
SPECIAL = ["sqlite:///x.db", "sqlite://", "memory://", "redis://u:pw@h/0", "60/minute",
           "0/second", "-1/day", "1e999/hour", "10.0.0.0/8", "0.0.0.0/0", "::/0", "300.1.1.1/8",
           "/v1/*", "*", "", "HS256", "none", "RS256", "deny", "flag", "x-forwarded-for",
           "forwarded", "DE", "ZZ", "gpt-4o*", "https://sso.example/", "/dev/null", "..",
           "GATEKEEPER_PEPPER", "PATH", "\x00", "a\nb", "\ud800"]
LEAF = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                 st.sampled_from([10**400, -(10**400), 0, 1, -1]), st.floats(),
                 st.text(max_size=12), st.sampled_from(SPECIAL))
KEY = st.sampled_from(NAMES) | st.text(max_size=8) | st.integers(-2, 2) | st.none()
VALUE = st.recursive(LEAF, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(KEY, inner, max_size=5), max_leaves=30)
MAPPING = st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=8), VALUE, max_size=8)

BASE: dict[str, Any] = {
    **copy.deepcopy(POLICY), "version": 1, "store": "memory://",
    "keys": {"cache_ttl": 2.5, "pepper_env": "GATEKEEPER_PEPPER"},
    "refusals": {"conceal": True}, "prices": {"default": {"input": 1.0, "output": 2.0}},
}
BASE["tenants"]["metered"]["limits"].update(
    {"daily_tokens": 1000, "monthly_spend": 20, "per_tenant": {"concurrency": 4}})


def _paths(value: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [here]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*here, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _paths(item, (*here, i))
    return found


PATHS = _paths(BASE)[1:]


def _mutated(path: tuple[Any, ...], how: str, value: Any, stranger: str) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    parent: Any = data
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if how == "replace":
        parent[last] = value
    elif how == "remove":
        del parent[last]
    elif isinstance(parent, dict):
        parent[stranger] = value
    else:
        parent.append(value)
    return data


MUTATED = st.builds(_mutated, st.sampled_from(PATHS), st.sampled_from(["replace", "remove",
                                                                       "add"]),
                    VALUE, st.sampled_from(NAMES) | st.text(max_size=6))


def _field_named(error: PolicyError) -> None:
    assert error.errors, error
    for one in error.errors:
        assert isinstance(one, ConfigError) and one.field, one
        assert "Traceback" not in str(one) and "\n" not in str(one), one  # one line each


def _compiles_or_names_fields(data: Any) -> None:
    try:
        policy = compile_policy(data)
    except PolicyError as exc:
        _field_named(exc)
        return
    try:  # what compiles must also start, or refuse to with a GatekeeperError
        Gatekeeper(Recorder(), policy, store=MemoryStore(), pepper=PEPPER)
    except GatekeeperError as exc:
        assert str(exc) and "Traceback" not in str(exc)


@pytest.fixture(autouse=True)
def _jwt_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUZZ_JWT_SECRET", "fuzz-jwt-secret-" + "0123456789" * 4)


def test_the_base_policy_is_valid() -> None:
    """Mutations start from a policy that compiles, so each error is the mutation's."""
    policy = compile_policy(BASE)
    assert set(policy.tenants) == set(POLICY["tenants"])


@examples(600)
@given(MAPPING)
def test_random_mappings_compile_or_name_every_wrong_field(data: dict[str, Any]) -> None:
    _compiles_or_names_fields(data)


@examples(600)
@given(MUTATED)
def test_one_value_changed_anywhere_compiles_or_names_the_field(data: dict[str, Any]) -> None:
    _compiles_or_names_fields(data)


@examples(200)
@given(st.one_of(MAPPING, MUTATED).map(lambda d: yaml.safe_dump(d, allow_unicode=False))
       | st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_random_policy_files_load_or_say_what_is_wrong(tmp_path_factory: pytest.TempPathFactory,
                                                       text: str) -> None:
    path: Path = tmp_path_factory.mktemp("policy") / "policy.yaml"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    try:
        load_policy(path)
    except PolicyError as exc:
        _field_named(exc)


def test_non_finite_and_huge_numbers_are_named() -> None:
    """Regression seeds the generator found worth keeping explicit."""
    for value in (math.inf, -math.inf, math.nan, 10**400):
        data = copy.deepcopy(BASE)
        data["keys"]["cache_ttl"] = value
        with pytest.raises(PolicyError) as caught:
            compile_policy(data)
        assert [e.field for e in caught.value.errors] == ["keys.cache_ttl"]


def test_an_odd_name_from_the_file_is_quoted_in_its_one_line_error() -> None:
    """Found by the fuzz run: ``'': 1`` was reported as ``: is not a known field``, and a
    tenant named by a newline split its error over two lines."""
    with pytest.raises(PolicyError) as caught:
        compile_policy({"": 1, "\u200b": 2, 7: 3,
                        "tenants": {"acme": {"x\ny": 1}, "\n": None, "ok": {"z\t": 1}}})
    fields = sorted(e.field for e in caught.value.errors)
    assert fields == sorted(['""', '"\\u200b"', "7", 'tenants.acme."x\\ny"', 'tenants."\\n"',
                             'tenants.ok."z\\t"'])
    assert all("\n" not in str(e) for e in caught.value.errors)
