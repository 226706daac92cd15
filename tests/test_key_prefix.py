"""A deployment's own key prefix (``keys.prefix``): new keys carry it, keys issued under an
earlier prefix (``keys.accepted_prefixes``) keep working, the checksum binds the prefix, and a
bad prefix is a configuration error naming its field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from gatekeeper import (
    KEY_PATTERN,
    Gatekeeper,
    PolicyError,
    SQLiteStore,
    build_key,
    compile_policy,
    key_admin,
    key_pattern,
    parse_key,
)
from gatekeeper.credentials import CredentialReader, credential_from
from gatekeeper.keys import BODY_LEN
from gatekeeper.principal import CredentialKind
from gatekeeper.reasons import Refusal
from tests.conftest import PEPPER, Recorder
from tests.serving import serving
from tests.test_cli import cli_with

ID, SECRET = "AbCdEfGh1234", "s" * 32


def test_default_prefix_and_pattern_are_unchanged() -> None:
    key = build_key(ID, SECRET)
    assert key.startswith("gk_") and len(key) == 53
    assert KEY_PATTERN == r"\bgk_[0-9A-Za-z]{50}\b" == key_pattern("gk_")
    assert parse_key(key) == (ID, SECRET)


def test_a_key_under_another_prefix_parses_only_where_that_prefix_is_accepted() -> None:
    key = build_key(ID, SECRET, "acme_")
    assert key.startswith("acme_") and len(key) == len("acme_") + BODY_LEN
    assert re.fullmatch(key_pattern("acme_"), key)
    assert not re.search(KEY_PATTERN, key)
    assert parse_key(key) is None  # the default accepts gk_ only
    assert parse_key(key, ("acme_",)) == (ID, SECRET)
    assert parse_key(key, ("acme_", "gk_")) == (ID, SECRET)
    assert parse_key(build_key(ID, SECRET), ("acme_", "gk_")) == (ID, SECRET)


def test_the_checksum_binds_the_prefix() -> None:
    """The same id, secret and CRC under another accepted prefix is not a key."""
    key = build_key(ID, SECRET, "acme_")
    moved = "beta_" + key[len("acme_"):]
    assert parse_key(moved, ("acme_", "beta_")) is None
    assert parse_key("gk_" + key[len("acme_"):], ("acme_", "gk_")) is None


def test_prefixes_that_start_alike_are_each_tried() -> None:
    """``gk_`` and ``gk_x_``: a ``gk_x_`` key also starts with ``gk_``."""
    key = build_key(ID, SECRET, "gk_x_")
    assert parse_key(key, ("gk_", "gk_x_")) == (ID, SECRET)


def test_the_credential_reader_classifies_by_its_own_prefixes() -> None:
    key = build_key(ID, SECRET, "acme_")
    header = [(b"x-api-key", key.encode())]
    refused = credential_from(header)  # the default reader: gk_ only
    assert isinstance(refused, Refusal) and refused.reason.code == "credential_malformed"
    found = CredentialReader(("acme_", "gk_")).read(header)
    assert not isinstance(found, Refusal) and found is not None
    assert found.kind is CredentialKind.API_KEY and found.token == key
    again = credential_from(header)  # its cache is not the other reader's
    assert isinstance(again, Refusal)


# --- policy ---------------------------------------------------------------------------------

def test_policy_prefix_defaults_and_accepted_prefixes() -> None:
    default = compile_policy({"tenants": {"acme": {}}})
    assert default.keys.prefix == "gk_" and default.keys.prefixes == ("gk_",)
    own = compile_policy({"keys": {"prefix": "acme_", "accepted_prefixes": ["gk_", "acme_"]}})
    assert own.keys.prefix == "acme_"
    assert own.keys.prefixes == ("acme_", "gk_")  # the current one first, no repeat


@pytest.mark.parametrize("prefix", ["gk", "GK_", "a_", "acme-", "acme.", "_acme_", "x" * 16 + "_",
                                    "ac me_", "", "ké_"])
def test_a_bad_prefix_is_a_config_error_naming_keys_prefix(prefix: str) -> None:
    with pytest.raises(PolicyError) as caught:
        compile_policy({"keys": {"prefix": prefix}})
    assert [e.field for e in caught.value.errors] == ["keys.prefix"]
    assert "ending in _" in str(caught.value)


def test_a_bad_accepted_prefix_is_named_by_its_index() -> None:
    with pytest.raises(PolicyError) as caught:
        compile_policy({"keys": {"prefix": "acme_", "accepted_prefixes": ["gk_", "Old"]}})
    assert [e.field for e in caught.value.errors] == ["keys.accepted_prefixes[1]"]
    with pytest.raises(PolicyError) as caught:
        compile_policy({"keys": {"prefix": 7}})
    assert [e.field for e in caught.value.errors] == ["keys.prefix"]


# --- the CLI issues keys with the policy's prefix -------------------------------------------

PREFIXED_POLICY = """\
version: 1
keys:
  pepper_file: "{pepper}"
  prefix: acme_
  accepted_prefixes: [gk_]
tenants:
  acme: {{}}
"""


def test_cli_creates_and_rotates_keys_under_the_policy_prefix(tmp_path: Path) -> None:
    cli = cli_with(tmp_path, PREFIXED_POLICY)
    key, record = cli.create()
    assert key.startswith("acme_") and re.fullmatch(key_pattern("acme_"), key)
    assert parse_key(key, ("acme_",)) == (record["key_id"], key[len("acme_") + 12:-6])
    rotated = cli.keys("rotate", record["key_id"], "--grace", "1h", as_json=True).json()
    assert rotated["key"].startswith("acme_")
    checked = cli.run("check-config", str(cli.policy))
    assert checked.code == 0, checked.err
    assert "prefix acme_ (also accepting gk_)" in checked.out
    assert key_pattern("acme_") in checked.out


def test_cli_refuses_a_bad_prefix_naming_the_field(tmp_path: Path) -> None:
    cli = cli_with(tmp_path, PREFIXED_POLICY.replace("prefix: acme_", "prefix: Acme"))
    result = cli.run("check-config", str(cli.policy))
    assert result.code == 2 and "keys.prefix" in result.err and "Traceback" not in result.err
    assert cli.keys("create", "--tenant", "acme").code == 2


# --- a running server ---------------------------------------------------------------------

async def _issue(store: SQLiteStore, policy: dict[str, Any]) -> str:
    key, _ = await key_admin.create_key(store, PEPPER, compile_policy(policy), "acme", 1.0)
    return key


@pytest.mark.anyio
async def test_a_server_accepts_new_and_earlier_prefixes_only(tmp_path: Path) -> None:
    """Keys issued under gk_ before the switch keep working next to the new acme_ keys; a
    key under a prefix the policy does not accept is refused like garbage."""
    store = SQLiteStore(tmp_path / "keys.db")
    base_policy: dict[str, Any] = {"routes": {"protect": ["/v1/*"]}, "tenants": {"acme": {}}}
    old = await _issue(store, base_policy)
    switched = base_policy | {"keys": {"prefix": "acme_", "accepted_prefixes": ["gk_"]}}
    new = await _issue(store, switched)
    other = await _issue(store, base_policy | {"keys": {"prefix": "other_"}})
    assert old.startswith("gk_") and new.startswith("acme_") and other.startswith("other_")
    await store.close()

    def server(policy: dict[str, Any]) -> Gatekeeper:
        return Gatekeeper(Recorder(), policy, store=f"sqlite:///{tmp_path / 'keys.db'}",
                          pepper=PEPPER)

    with serving(server(switched)) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            for key in (old, new):
                response = await client.get("/v1/models",
                                            headers={"authorization": f"Bearer {key}"})
                assert response.status_code == 200, (key[:6], response.text)
            response = await client.get("/v1/models", headers={"x-api-key": other})
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "credential_malformed"
    only_new = base_policy | {"keys": {"prefix": "acme_"}}
    with serving(server(only_new)) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            refused = await client.get("/v1/models", headers={"x-api-key": old})
            assert refused.status_code == 401
            allowed = await client.get("/v1/models", headers={"x-api-key": new})
            assert allowed.status_code == 200
