"""Policy loading: a good file becomes a Policy; a bad one is ONE PolicyError naming every field.

A typo in a security policy must never silently widen it, so unknown fields, duplicate keys
and YAML's loose scalars (``yes`` for a number) are errors, and secrets are never echoed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from gatekeeper import (
    ConfigError,
    PolicyError,
    compile_policy,
    load_pepper,
    load_policy,
    store_from_url,
)
from gatekeeper.networks import parse_ip
from gatekeeper.policy.model import DEFAULT_PEPPER_ENV, KeyPolicy, Policy

REPO = Path(__file__).resolve().parent.parent

FULL = """\
version: 1
store: "memory://"
tenants:
  acme:
    allowed_networks: ["192.0.2.0/24", "2001:db8::/32"]
  globex: {}
  initech:
    disabled: true
routes:
  protect: ["/v1/*", "/admin"]
  public: ["/healthz", "/v1/models"]
client_address:
  trusted_proxies: ["10.0.0.0/8", "fd00::/8"]
  header: forwarded
  max_hops: 5
request_tenant:
  header: X-Tenant-ID
  path_segment: 2
keys:
  cache_ttl: 2.5
  pepper_env: MY_PEPPER
jwt:
  issuers:
    corp:
      issuer: https://sso.example.test/
      audiences: [gatekeeper, gatekeeper-admin]
      algorithms: [HS256]
      secret_env: CORP_SECRET
      tenant_claim: org
      subject_claim: email
      leeway: 10
      jwks_cache_ttl: 120
"""

BAD = """\
tenants:
  acme:
    allowed_networks: ["192.0.2.0/24", "10.0.0.1/8", "10.0.0/8"]
  globex:
    alowed_networks: ["198.51.100.0/24"]
client_address:
  max_hops: 0
  header: x-real-ip
request_tenant:
  path_segment: 99
keys:
  cache_ttl: 600
"""

BAD_LINES = [
    'tenants.acme.allowed_networks[1]: "10.0.0.1/8" is not a network',
    'tenants.acme.allowed_networks[2]: "10.0.0/8" is not a network',
    "tenants.globex.alowed_networks: is not a known field (did you mean allowed_networks?)",
    "client_address.max_hops: 0 must be between 1 and 100",
    'client_address.header: "x-real-ip" must be one of x-forwarded-for, forwarded',
    "request_tenant.path_segment: 99 must be between 0 and 32",
    "keys.cache_ttl: 600 must be between 0 and 60",
]

PEPPER = "pepper-0123456789-abcdefghijklmnopqrstuvwxyz"


def write(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def policy_errors(data: object) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        compile_policy(data)
    assert info.value.errors
    return info.value


def file_errors(tmp_path: Path, text: str) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        load_policy(write(tmp_path, text))
    assert info.value.errors
    return info.value


def fields(error: PolicyError) -> list[str]:
    return [e.field for e in error.errors]


def only_error(error: PolicyError) -> ConfigError:
    assert len(error.errors) == 1, str(error)
    return error.errors[0]


def nets(policy_nets: Any) -> list[str]:
    return [str(n) for n in policy_nets.networks]


# --- a good policy --------------------------------------------------------------------------

def test_full_policy_file_loads_with_every_value(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    policy = load_policy(path)
    assert isinstance(policy, Policy)
    assert policy.source == str(path)
    assert policy.store == "memory://"

    assert sorted(policy.tenants) == ["acme", "globex", "initech"]
    acme = policy.tenants["acme"]
    assert nets(acme.allowed_networks) == ["192.0.2.0/24", "2001:db8::/32"]
    assert not acme.disabled
    assert parse_ip("192.0.2.77") in acme.allowed_networks
    assert parse_ip("198.51.100.1") not in acme.allowed_networks
    assert nets(policy.tenants["globex"].allowed_networks) == []
    assert policy.tenants["initech"].disabled

    assert policy.routes.protect == ("/v1/*", "/admin")
    assert policy.routes.public == ("/healthz", "/v1/models")
    assert policy.routes.is_protected("/v1/chat/completions")
    assert policy.routes.is_protected("/admin")
    assert not policy.routes.is_protected("/v1/models")
    assert not policy.routes.is_protected("/healthz")
    assert not policy.routes.is_protected("/elsewhere")

    ca = policy.client_address
    assert nets(ca.trusted_proxies) == ["10.0.0.0/8", "fd00::/8"]
    assert (ca.header, ca.max_hops) == ("forwarded", 5)
    assert policy.request_tenant.header == "x-tenant-id"  # header names are lower-cased
    assert policy.request_tenant.path_segment == 2
    assert policy.keys == KeyPolicy(cache_ttl=2.5, pepper_env="MY_PEPPER", pepper_file=None)

    (corp,) = policy.issuers
    assert corp.name == "corp"
    assert corp.issuer == "https://sso.example.test/"
    assert corp.audiences == ("gatekeeper", "gatekeeper-admin")
    assert corp.algorithms == ("HS256",)
    assert corp.family == "HMAC"
    assert corp.secret_env == "CORP_SECRET"
    assert (corp.tenant_claim, corp.subject_claim) == ("org", "email")
    assert (corp.leeway, corp.jwks_cache_ttl) == (10.0, 120.0)


def test_load_policy_accepts_a_mapping_and_compile_matches_the_file(tmp_path: Path) -> None:
    import yaml

    data = yaml.safe_load(FULL)
    from_dict = load_policy(data)
    from_file = load_policy(write(tmp_path, FULL))
    assert from_dict.source == "policy"
    assert from_dict.tenants == from_file.tenants
    assert from_dict.issuers == from_file.issuers
    assert from_dict.keys == from_file.keys


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n"])
def test_empty_policy_gives_safe_defaults(tmp_path: Path, text: str) -> None:
    policy = load_policy(write(tmp_path, text))
    assert policy.tenants == {}
    assert policy.routes.protect == ("/*",)  # everything is protected unless said otherwise
    assert policy.routes.is_protected("/anything")
    assert nets(policy.client_address.trusted_proxies) == []  # no proxy is trusted
    assert policy.keys == KeyPolicy()
    assert policy.keys.pepper_env == DEFAULT_PEPPER_ENV
    assert policy.issuers == ()


def test_single_network_string_and_yaml_booleans(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, "tenants:\n  acme:\n    allowed_networks: 10.0.0.0/8\n"
                                         "    disabled: yes\n"))
    assert nets(policy.tenants["acme"].allowed_networks) == ["10.0.0.0/8"]
    assert policy.tenants["acme"].disabled is True


# --- where the store is ------------------------------------------------------------------

@pytest.mark.parametrize(("store", "expected"), [
    ('store: "sqlite:///keys.db"\n', "conf/keys.db"),
    ('store: "sqlite:///data/keys.db"\n', "conf/data/keys.db"),
    ("", "conf/gatekeeper-keys.db"),  # the default store is a relative path too
])
def test_a_relative_sqlite_store_is_relative_to_the_policy_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: str, expected: str) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "elsewhere").mkdir()
    path = write(tmp_path / "conf", store + "tenants:\n  acme: {}\n")
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert load_policy(path).store == f"sqlite:///{tmp_path.resolve() / expected}"
    monkeypatch.chdir(tmp_path)
    assert load_policy(Path("conf/policy.yaml")).store == load_policy(path).store


@pytest.mark.parametrize("store", ["sqlite:////var/lib/gatekeeper/keys.db", "memory://"])
def test_absolute_and_memory_stores_are_kept_as_written(tmp_path: Path, store: str) -> None:
    assert load_policy(write(tmp_path, f'store: "{store}"\n')).store == store


def test_a_policy_dict_keeps_its_store_as_given() -> None:
    assert compile_policy({"store": "sqlite:///keys.db"}).store == "sqlite:///keys.db"
    assert compile_policy({}).store is None


# --- every error at once --------------------------------------------------------------------

def test_several_errors_raise_one_policy_error_listing_all(tmp_path: Path) -> None:
    path = write(tmp_path, BAD)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    text = str(info.value)
    assert text.startswith(f"{path}: {len(BAD_LINES)} errors\n")
    for line in BAD_LINES:
        assert line in text
    assert len(info.value.errors) == len(BAD_LINES)
    assert info.value.source == str(path)
    network = next(e for e in info.value.errors
                   if e.field == "tenants.acme.allowed_networks[2]")
    assert network.value == "10.0.0/8"


def test_errors_in_every_section_are_collected() -> None:
    error = policy_errors({
        "version": 2,
        "store": "postgres://db/keys",
        "tenants": {"bad name!": {}},
        "routes": {"protect": ["v1/*", "/v1/*/chat"], "public": ["/ok", 5]},
        "client_address": {"trusted_proxies": ["10.0.0.0/8", "not-a-net"]},
        "request_tenant": {"header": "x tenant"},
        "keys": {"pepper_env": "1-BAD"},
        "jwt": {"issuers": {"corp": {"issuer": "x", "audiences": ["a"],
                                     "algorithms": ["none"], "secret_env": "S"}}},
    })
    assert set(fields(error)) >= {
        "version", "store", "tenants.bad name!", "routes.protect[0]", "routes.protect[1]",
        "routes.public[1]", "client_address.trusted_proxies[1]", "request_tenant.header",
        "keys.pepper_env", "jwt.issuers.corp.algorithms[0]",
    }
    text = str(error)
    assert '"postgres://db/keys"' in text
    assert 'routes.protect[0]: "v1/*" is not a path pattern' in text
    assert 'client_address.trusted_proxies[1]: "not-a-net" is not a network' in text


# --- unknown fields and typos ---------------------------------------------------------------

@pytest.mark.parametrize(("text", "field"), [
    ("tenant:\n  acme: {}\n", "tenant"),
    ("tenants:\n  acme:\n    allowed_network: [10.0.0.0/8]\n", "tenants.acme.allowed_network"),
    ("tenants:\n  acme:\n    disable: true\n", "tenants.acme.disable"),
    ("route:\n  protect: [/v1/*]\n", "route"),
    ("routes:\n  protected: [/v1/*]\n", "routes.protected"),
    ("client_adress:\n  trusted_proxies: []\n", "client_adress"),
    ("client_address:\n  trusted_proxy: [10.0.0.0/8]\n", "client_address.trusted_proxy"),
    ("request_tenant:\n  headers: x-tenant\n", "request_tenant.headers"),
    ("keys:\n  pepper: abc\n", "keys.pepper"),
    ("jwt:\n  issuer: {}\n", "jwt.issuer"),
])
def test_unknown_fields_are_errors_naming_the_field(tmp_path: Path, text: str,
                                                    field: str) -> None:
    error = only_error(file_errors(tmp_path, text))
    assert error.field == field
    assert "is not a known field" in error.problem


def test_unknown_field_does_not_hide_the_known_ones(tmp_path: Path) -> None:
    error = file_errors(tmp_path, "tenants:\n  acme:\n    allowed_networks: [10.0.0/8]\n"
                                  "    alowed_networks: []\n")
    assert sorted(fields(error)) == ["tenants.acme.allowed_networks[0]",
                                     "tenants.acme.alowed_networks"]


# --- YAML strictness ------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "tenants:\n  acme:\n    allowed_networks: [10.0.0.0/8]\n  acme:\n    allowed_networks: []\n",
    "tenants:\n  acme: {}\ntenants:\n  globex: {}\n",
    "keys:\n  cache_ttl: 1\n  cache_ttl: 5\n",
])
def test_duplicate_keys_are_errors_not_last_wins(tmp_path: Path, text: str) -> None:
    error = only_error(file_errors(tmp_path, text))
    assert error.field == "(file)"
    assert "duplicate key" in error.problem


def test_unhashable_yaml_key_is_a_policy_error(tmp_path: Path) -> None:
    error = only_error(file_errors(tmp_path, "tenants:\n  ? [a, b]\n  : {}\n"))
    assert error.field == "(file)"
    assert "not valid YAML" in error.problem


@pytest.mark.parametrize(("text", "field"), [
    ("client_address:\n  max_hops: yes\n", "client_address.max_hops"),
    ("keys:\n  cache_ttl: yes\n", "keys.cache_ttl"),
    ("request_tenant:\n  path_segment: on\n", "request_tenant.path_segment"),
    ("version: yes\n", "version"),
    ("jwt:\n  issuers:\n    c:\n      issuer: x\n      audiences: [a]\n"
     "      algorithms: [HS256]\n      secret_env: S\n      leeway: no\n",
     "jwt.issuers.c.leeway"),
])
def test_yaml_booleans_are_not_numbers(tmp_path: Path, text: str, field: str) -> None:
    error = only_error(file_errors(tmp_path, text))
    assert error.field == field
    assert error.value in (True, False)
    assert "must be" in error.problem


@pytest.mark.parametrize(("text", "field"), [
    ("keys:\n  cache_ttl: .nan\n", "keys.cache_ttl"),
    ("keys:\n  cache_ttl: .inf\n", "keys.cache_ttl"),
    ("keys:\n  cache_ttl: -1\n", "keys.cache_ttl"),
    ("client_address:\n  max_hops: 2.5\n", "client_address.max_hops"),
    ("tenants:\n  acme:\n    disabled: \"yes\"\n", "tenants.acme.disabled"),
])
def test_numbers_and_flags_are_checked(tmp_path: Path, text: str, field: str) -> None:
    assert only_error(file_errors(tmp_path, text)).field == field


@pytest.mark.parametrize("text", ["- acme\n- globex\n", "just a string\n", "42\n"])
def test_non_mapping_top_level_is_refused(tmp_path: Path, text: str) -> None:
    error = only_error(file_errors(tmp_path, text))
    assert error.field == "(top level)"
    assert "must be a mapping" in error.problem


def test_non_mapping_sections_are_refused() -> None:
    error = policy_errors({"tenants": ["acme"], "routes": "/v1/*", "keys": 5})
    assert set(fields(error)) == {"tenants", "routes", "keys"}
    assert 'tenants: ["acme"] must be a mapping' in str(error)


def test_compile_policy_refuses_a_list() -> None:
    assert only_error(policy_errors([1, 2])).field == "(top level)"


# --- unreadable and invalid files -----------------------------------------------------------

def test_missing_file_is_a_policy_error_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent.yaml"
    with pytest.raises(PolicyError) as info:
        load_policy(missing)
    error = only_error(info.value)
    assert error.field == "(file)"
    assert error.value == str(missing)
    assert "cannot be read" in error.problem


def test_directory_and_binary_files_are_policy_errors(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path)
    assert only_error(info.value).field == "(file)"
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"tenants:\n  \xff\xfe: {}\n")
    with pytest.raises(PolicyError) as info:
        load_policy(binary)
    assert only_error(info.value).field == "(file)"


@pytest.mark.parametrize("text", [
    "tenants: [unclosed\n",
    "tenants:\n  acme: {\n",
    "tenants:\n\tacme: {}\n",
    "key: value\n  bad indent: x\n",
    "!!python/object/apply:os.system ['true']\n",
])
def test_invalid_yaml_is_a_policy_error_naming_the_file(tmp_path: Path, text: str) -> None:
    error = only_error(file_errors(tmp_path, text))
    assert error.field == "(file)"
    assert "is not valid YAML" in error.problem


# --- client_address -------------------------------------------------------------------------

@pytest.mark.parametrize("everything", ["0.0.0.0/0", "::/0", "0.0.0.0/1", "128.0.0.0/7",
                                        "::/1"])
def test_trusting_every_address_is_refused(everything: str) -> None:
    error = only_error(policy_errors(
        {"client_address": {"trusted_proxies": ["10.0.0.0/8", everything, "fc00::/7"]}}))
    assert error.field == "client_address.trusted_proxies[1]"
    assert error.value == everything
    assert "spoofable" in error.problem


@pytest.mark.parametrize("public", ["8.0.0.0/8", "52.0.0.0/11", "104.16.0.0/13",
                                    "1.2.0.0/15", "2600::/12", "2a06:98c0::/29",
                                    "2001:4860::/31"])
def test_a_wide_public_proxy_network_needs_an_explicit_flag(public: str) -> None:
    error = only_error(policy_errors({"client_address": {"trusted_proxies": [public]}}))
    assert error.field == "client_address.trusted_proxies[0]"
    assert error.value == public
    assert "public" in error.problem
    assert "allow_wide_public_proxies" in error.problem
    allowed = compile_policy({"client_address": {"trusted_proxies": [public],
                                                 "allow_wide_public_proxies": True}})
    assert nets(allowed.client_address.trusted_proxies) == [public]


@pytest.mark.parametrize("narrow", ["1.2.0.0/16", "203.0.113.0/24", "8.8.8.8/32",
                                    "2606:4700::/32", "2600:1f18::/36", "10.0.0.0/8",
                                    "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
                                    "127.0.0.0/8", "fc00::/7", "fe80::/10", "::1/128"])
def test_narrow_public_and_private_proxy_networks_need_no_flag(narrow: str) -> None:
    policy = compile_policy({"client_address": {"trusted_proxies": [narrow]}})
    assert nets(policy.client_address.trusted_proxies) == [narrow]


@pytest.mark.parametrize("everything", ["0.0.0.0/1", "0.0.0.0/7", "::/1", "2000::/3"])
def test_the_flag_never_allows_trusting_nearly_everyone(everything: str) -> None:
    error = only_error(policy_errors({"client_address": {
        "trusted_proxies": [everything], "allow_wide_public_proxies": True}}))
    assert "spoofable" in error.problem


def test_the_wide_proxy_flag_must_be_a_boolean() -> None:
    error = only_error(policy_errors({"client_address": {
        "trusted_proxies": ["1.2.0.0/16"], "allow_wide_public_proxies": "yes"}}))
    assert error.field == "client_address.allow_wide_public_proxies"


def test_host_bits_in_a_network_are_refused() -> None:
    error = only_error(policy_errors({"tenants": {"acme": {"allowed_networks": ["10.0.0.1/8"]}}}))
    assert error.field == "tenants.acme.allowed_networks[0]"


# --- version --------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [0, 2, 99])
def test_unsupported_version_is_refused(version: int) -> None:
    error = only_error(policy_errors({"version": version}))
    assert error.field == "version"
    assert error.value == version
    assert "not supported" in error.problem


def test_version_must_be_an_integer() -> None:
    assert only_error(policy_errors({"version": "1"})).field == "version"
    assert compile_policy({"version": 1}).tenants == {}


# --- pepper ---------------------------------------------------------------------------------

def keys_policy(**keys: Any) -> KeyPolicy:
    return compile_policy({"keys": keys}).keys


def test_pepper_from_environment() -> None:
    keys = keys_policy(pepper_env="MY_PEPPER")
    assert load_pepper(keys, {"MY_PEPPER": f"  {PEPPER}\n"}) == PEPPER.encode()
    assert load_pepper(KeyPolicy(), {DEFAULT_PEPPER_ENV: PEPPER}) == PEPPER.encode()


def test_unset_pepper_env_names_the_field() -> None:
    keys = keys_policy(pepper_env="MY_PEPPER")
    for environ in ({}, {"MY_PEPPER": "   "}, {DEFAULT_PEPPER_ENV: PEPPER}):
        with pytest.raises(ConfigError) as info:
            load_pepper(keys, environ)
        assert info.value.field == "keys.pepper_env"
        assert "MY_PEPPER" not in str(info.value)  # a name from the policy may be a secret
        assert "not set" in info.value.problem


@pytest.mark.parametrize("pepper", ["short-pepper", "p" * 31, "\u00e9" * 15])
def test_short_pepper_from_env_never_shows_the_value(pepper: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_pepper(keys_policy(pepper_env="MY_PEPPER"), {"MY_PEPPER": pepper})
    assert info.value.field == "keys.pepper_env"
    assert pepper not in str(info.value)
    assert pepper not in repr(info.value.value)
    assert "at least 32" in str(info.value)


def test_pepper_from_file(tmp_path: Path) -> None:
    path = tmp_path / "pepper"
    path.write_text(PEPPER + "\n", encoding="utf-8")
    keys = keys_policy(pepper_file=str(path), pepper_env="MY_PEPPER")
    # the file wins over the environment, and its trailing newline is not part of it
    assert load_pepper(keys, {"MY_PEPPER": "x" * 40}) == PEPPER.encode()


def test_short_pepper_file_never_shows_the_value(tmp_path: Path) -> None:
    secret = "tiny-pepper-value"
    path = tmp_path / "pepper"
    path.write_text(secret, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_pepper(keys_policy(pepper_file=str(path)), {})
    assert info.value.field == "keys.pepper_file"
    assert secret not in str(info.value)
    assert str(len(secret)) in str(info.value)


def test_missing_pepper_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "absent"
    with pytest.raises(ConfigError) as info:
        load_pepper(keys_policy(pepper_file=str(path)), {DEFAULT_PEPPER_ENV: PEPPER})
    assert info.value.field == "keys.pepper_file"
    assert "cannot be read" in info.value.problem


# --- gatekeeper check-config ----------------------------------------------------------------

def check_config(path: Path | str, pepper: str | None = None,
                 jwt_secret: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MY_PEPPER", "CORP_SECRET", DEFAULT_PEPPER_ENV)}
    env["PYTHONPATH"] = str(REPO)  # the package under test, wherever the venv points
    if pepper is not None:
        env["MY_PEPPER"] = pepper
    if jwt_secret is not None:
        env["CORP_SECRET"] = jwt_secret
    return subprocess.run([sys.executable, "-m", "gatekeeper.cli.main", "check-config", str(path)],
                          capture_output=True, text=True, env=env, timeout=60, check=False)


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stdout + result.stderr


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    result = check_config(path, pepper=PEPPER, jwt_secret="s" * 32)
    assert result.returncode == 0, result.stderr
    assert f"{path}: ok (3 tenants, 1 JWT issuers, protecting /v1/*, /admin)" in result.stdout
    assert result.stderr == ""
    no_traceback(result)


def test_check_config_warns_but_passes_without_a_pepper(tmp_path: Path) -> None:
    result = check_config(write(tmp_path, FULL))
    assert result.returncode == 0
    assert "warning: keys.pepper_env" in result.stderr
    assert "not set" in result.stderr
    no_traceback(result)


def test_check_config_warns_about_a_missing_jwt_secret(tmp_path: Path) -> None:
    result = check_config(write(tmp_path, FULL), pepper=PEPPER, jwt_secret="short")
    assert result.returncode == 0
    assert "warning: jwt.issuers.corp.secret_env" in result.stderr
    assert "short" not in result.stderr.replace("CORP_SECRET", "")
    no_traceback(result)


def test_check_config_names_every_field_of_a_bad_file(tmp_path: Path) -> None:
    path = write(tmp_path, BAD)
    result = check_config(path, pepper=PEPPER)
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"{path}: {len(BAD_LINES)} errors" in result.stderr
    for line in BAD_LINES:
        assert line in result.stderr
    no_traceback(result)


@pytest.mark.parametrize("text", [None, "tenants: [unclosed\n", "tenants:\n  ? [a]\n  : {}\n",
                                  "- a\n"])
def test_check_config_unusable_files_exit_2_without_traceback(tmp_path: Path,
                                                              text: str | None) -> None:
    path = tmp_path / "policy.yaml"
    if text is not None:
        path.write_text(text, encoding="utf-8")
    result = check_config(path)
    assert result.returncode == 2
    assert result.stderr.startswith("gatekeeper: ")
    assert "(file)" in result.stderr or "(top level)" in result.stderr
    no_traceback(result)


# --- secrets in the wrong place are never echoed --------------------------------------------

SECRET = "hunter2-s3cr3t-Value_0123456789"


@pytest.mark.parametrize("url", [  # each wrong somewhere (a port, an option) but its secret
    f"redis://:{SECRET}@cache:port/0",
    f"redis://default:{SECRET}@cache:port",
    f"rediss://{SECRET}@cache:port",
    f"redis://cache:6379/0?password={SECRET}&socket_timeout=soon",
    f"redis://user:{SECRET}/with@slash@cache",
    f"redis+cluster://:{SECRET}@cache:7000,cache:port",
    f"postgres://admin:{SECRET}@db/keys",
    f"sqlite://admin:{SECRET}@host/keys.db",
])
def test_a_store_url_password_is_never_echoed(tmp_path: Path, url: str) -> None:
    error = file_errors(tmp_path, f'store: "{url}"\n')
    assert fields(error) == ["store"]
    assert SECRET not in str(error)
    assert SECRET not in repr(error.errors[0].value)
    assert "***" in str(error)


def test_a_store_url_password_is_masked_in_reprs() -> None:
    url = f"memory://ops:{SECRET}@nowhere"
    policy = compile_policy({"store": url})
    assert SECRET not in repr(policy)
    store = store_from_url(url)
    assert SECRET not in repr(store)
    assert store.safe_url == "memory://ops:***@nowhere"
    assert store.url == url  # still usable to connect


@pytest.mark.parametrize(("text", "field"), [
    (f"pepper: {SECRET}\n", "pepper"),
    (f"secret: {SECRET}\n", "secret"),
    (f"keys:\n  pepper: {SECRET}\n", "keys.pepper"),
    (f"keys:\n  pepper_value: [{SECRET}]\n", "keys.pepper_value"),
    (f"tenants:\n  acme:\n    api_key: {{value: {SECRET}}}\n", "tenants.acme.api_key"),
    (f"jwt:\n  issuers:\n    c:\n      issuer: x\n      audiences: [a]\n"
     f"      algorithms: [HS256]\n      secret_env: S\n      secret: {SECRET}\n",
     "jwt.issuers.c.secret"),
])
def test_an_unknown_fields_value_is_never_echoed(tmp_path: Path, text: str, field: str) -> None:
    error = only_error(file_errors(tmp_path, text))
    assert error.field == field
    assert "is not a known field" in error.problem
    assert SECRET not in str(error)
    assert SECRET not in repr(error.value)


def test_an_unknown_field_suggests_the_known_one() -> None:
    error = only_error(policy_errors({"keys": {"peper_env": "X"}}))
    assert str(error) == "keys.peper_env: is not a known field (did you mean pepper_env?)"


@pytest.mark.parametrize(("data", "field"), [
    ({"keys": {"pepper_env": SECRET + "/+="}}, "keys.pepper_env"),
    ({"keys": {"pepper_env": 12345678901234567890}}, "keys.pepper_env"),
    ({"jwt": {"issuers": {"c": {"issuer": "x", "audiences": ["a"], "algorithms": ["RS256"],
                                "secret_env": SECRET}}}}, "jwt.issuers.c.secret_env"),
])
def test_an_env_fields_value_is_never_echoed(data: dict[str, Any], field: str) -> None:
    error = policy_errors(data)
    assert field in fields(error)
    assert SECRET not in str(error)
    assert "12345678901234567890" not in str(error)
    for e in error.errors:
        assert SECRET not in repr(e.value)


def test_a_secret_pasted_into_pepper_env_is_not_echoed_when_unset() -> None:
    keys = keys_policy(pepper_env="Hunter2SecretValue0123456789abcdef")
    with pytest.raises(ConfigError) as info:
        load_pepper(keys, {})
    assert "Hunter2SecretValue" not in str(info.value)
    assert info.value.field == "keys.pepper_env"
    assert "not set" in str(info.value)


def test_check_config_echoes_no_secret_from_any_wrong_field(tmp_path: Path) -> None:
    path = write(tmp_path, f"""\
store: "redis://:{SECRET}@cache:port/0"
pepper: {SECRET}
keys:
  pepper_env: "{SECRET}/+="
jwt:
  issuers:
    corp:
      issuer: https://sso.example.test/
      audiences: [gatekeeper]
      algorithms: [RS256]
      secret_env: {SECRET}
""")
    result = check_config(path)
    assert result.returncode == 2
    for name in ("store", "pepper", "keys.pepper_env", "jwt.issuers.corp.secret_env"):
        assert f"  {name}: " in result.stderr, name
    assert SECRET not in result.stdout + result.stderr
    no_traceback(result)


def test_check_config_never_echoes_a_secret_named_as_a_jwt_secret_env(tmp_path: Path) -> None:
    """A secret that happens to look like a variable name passes the policy, and the warning
    that the variable is unset must not print it either."""
    name = "Hunter2SecretValue0123456789abcdef"
    path = write(tmp_path, FULL.replace("secret_env: CORP_SECRET", f"secret_env: {name}"))
    result = check_config(path, pepper=PEPPER)
    assert result.returncode == 0, result.stderr
    assert "jwt.issuers.corp.secret_env" in result.stderr
    assert name not in result.stdout + result.stderr


# --- no input makes an error message expensive ----------------------------------------------

ALIAS_BOMB = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9 if prev else ['lol'] * 9)}]\n"
    for prev, name in zip(["", *"abcdefgh"], "abcdefghi", strict=True))


def test_the_alias_bomb_is_small() -> None:
    assert len(ALIAS_BOMB.encode()) < 500
    assert "*h, *h" in ALIAS_BOMB


def test_a_yaml_alias_bomb_is_refused_at_once_naming_the_line(tmp_path: Path) -> None:
    """Nine lines of aliases expand to 387 million strings: never expanded, never rendered."""
    path = write(tmp_path, "version: 1\n" + ALIAS_BOMB)
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "gatekeeper.cli.main", "check-config",
                             str(path)], capture_output=True, text=True, timeout=30,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert time.monotonic() - started < 10
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    assert "line 2" in lines[1]
    assert "anchor" in lines[1] and "alias" in lines[1]
    no_traceback(result)


@pytest.mark.parametrize(("text", "line"), [
    ("tenants:\n  acme: &office\n    allowed_networks: [10.0.0.0/8]\n  globex: *office\n", 2),
    ("version: 1\ntenants:\n  acme:\n    allowed_networks: &nets [10.0.0.0/8]\n", 4),
    ("base: &b {disabled: true}\ntenants:\n  acme:\n    <<: *b\n", 1),
    ("tenants:\n  acme:\n    allowed_networks: &loop [*loop]\n", 3),
])
def test_yaml_anchors_and_aliases_are_refused(tmp_path: Path, text: str, line: int) -> None:
    error = only_error(file_errors(tmp_path, text))
    assert error.field == "(file)"
    assert f"line {line}," in error.problem
    assert "anchors and aliases" in error.problem
    assert "\n" not in str(error)


def test_yaml_errors_are_one_line_naming_the_line(tmp_path: Path) -> None:
    error = only_error(file_errors(tmp_path, "tenants:\n  acme: {}\n  acme: {}\n"))
    assert error.problem == "is not valid YAML at line 3, column 3: duplicate key 'acme'"


def _bomb(levels: int) -> list[Any]:
    value: list[Any] = ["lol"] * 10
    for _ in range(levels):
        value = [value] * 10  # shared, so it costs nothing to build and everything to walk
    return value


def _cyclic_list() -> list[Any]:
    loop: list[Any] = ["10.0.0.0/8"]
    loop.append(loop)
    return loop


def _cyclic_dict() -> dict[str, Any]:
    loop: dict[str, Any] = {"kty": "oct"}
    loop["self"] = loop
    return loop


@pytest.mark.parametrize("data", [
    {"version": _bomb(7)},
    {"tenants": {"acme": {"allowed_networks": _bomb(7)}}},
    {"tenants": {"acme": {"alowed_networks": _bomb(7)}}},
    {"routes": _bomb(7)},
    {"version": _cyclic_list()},
    {"tenants": {"acme": {"allowed_networks": _cyclic_list()}}},
    {"tenants": {"acme": {"disabled": _cyclic_dict()}}},
    {"keys": _cyclic_list()},
    {"jwt": {"issuers": {"c": {"issuer": "x", "audiences": ["a"], "algorithms": ["RS256"],
                               "jwks": _cyclic_dict()}}}},
    {"version": 10 ** 5000},
    {"tenants": {"acme": {"allowed_networks": [[[[[[[[[[[[[[[["deep"]]]]]]]]]]]]]]]]}}},
], ids=["bomb", "bomb-item", "bomb-unknown", "bomb-section", "cycle", "cycle-item",
        "cycle-dict", "cycle-section", "cycle-jwks", "huge-int", "deep"])
def test_a_policy_dict_of_any_shape_gives_a_short_error_at_once(data: dict[str, Any]) -> None:
    started = time.monotonic()
    error = policy_errors(data)
    assert time.monotonic() - started < 1.0
    for line in str(error).splitlines():
        assert len(line) < 300, line
