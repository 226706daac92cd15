"""The ``gatekeeper`` command, run as a real subprocess against a real SQLite file: secrets print
once, errors are one clear line with exit code 2, and keys it makes authenticate in process."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gatekeeper import (
    KEY_PATTERN,
    Authenticator,
    ConfigError,
    Credential,
    ManualClock,
    MemoryStore,
    Principal,
    Refusal,
    compile_policy,
    decide,
    hash_secret,
    key_admin,
    load_pepper,
    load_policy,
    parse_key,
    store_from_url,
)
from gatekeeper.facts import RequestFacts
from gatekeeper.networks import parse_ip
from gatekeeper.principal import CredentialKind, KeyStatus
from gatekeeper.reasons import CREDENTIAL_MALFORMED, KEY_REVOKED, KEY_UNKNOWN, OK

PEPPER_TEXT = "cli-test-pepper-" + "0123456789abcdef" * 2  # 48 characters
assert len(PEPPER_TEXT) == 48


def cli_command() -> list[str]:
    exe = shutil.which("gatekeeper", path=os.path.dirname(sys.executable))
    return [exe] if exe else [sys.executable, "-m", "gatekeeper.cli.main"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("GATEKEEPER_POLICY", "GATEKEEPER_PEPPER")}
    env.update(extra)
    return env


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err

    def json(self) -> Any:
        assert self.code == 0, self.err
        return json.loads(self.out)

    def one_line_error(self) -> str:
        """A failure the way main() promises it: exit 2, one stderr line, no traceback."""
        assert self.code == 2, (self.code, self.out, self.err)
        assert "Traceback" not in self.text
        lines = self.err.strip().splitlines()
        assert len(lines) == 1, self.err
        assert lines[0].startswith("gatekeeper: ")
        return lines[0]


@dataclass
class Cli:
    tmp: Path
    policy: Path
    store_url: str
    env: dict[str, str] = field(default_factory=clean_env)
    command: list[str] = field(default_factory=cli_command)

    def run(self, *args: str, env: dict[str, str] | None = None) -> Result:
        proc = subprocess.run([*self.command, *args], capture_output=True, text=True,
                              cwd=self.tmp, env=self.env if env is None else env, timeout=60)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def keys(self, *args: str, as_json: bool = False) -> Result:
        flags = ["--policy", str(self.policy), "--store", self.store_url]
        return self.run("keys", *flags, *(["--json"] if as_json else []), *args)

    def create(self, tenant: str = "acme", *extra: str) -> tuple[str, dict[str, Any]]:
        data = self.keys("create", "--tenant", tenant, *extra, as_json=True).json()
        return data["key"], data["record"]

    def show(self, key_id: str) -> dict[str, Any]:
        record: dict[str, Any] = self.keys("show", key_id, as_json=True).json()
        return record


POLICY_YAML = """\
version: 1
keys:
  pepper_file: "{pepper}"
  cache_ttl: 1.0
routes:
  protect: ["/v1/*"]
  public: ["/healthz"]
tenants:
  acme:
    allowed_networks: ["192.0.2.0/24"]
  globex: {{}}
"""


def write_pepper(path: Path, text: str = PEPPER_TEXT) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def cli_with(tmp_path: Path, policy_template: str) -> Cli:
    """A CLI over a fresh pepper, SQLite store and policy (``{pepper}`` filled in)."""
    pepper = write_pepper(tmp_path / "pepper")
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_template.format(pepper=pepper))
    return Cli(tmp_path, policy, f"sqlite:///{tmp_path / 'keys.db'}")


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return cli_with(tmp_path, POLICY_YAML)


# --- create: the key prints once ----------------------------------------------------------------

def test_create_prints_the_key_exactly_once_and_never_again(cli: Cli) -> None:
    created = cli.keys("create", "--tenant", "acme")
    assert created.code == 0, created.err
    keys = re.findall(KEY_PATTERN, created.text)
    assert len(keys) == 1
    key = keys[0]
    assert created.out.count(key) == 1
    assert key not in created.err
    parsed = parse_key(key)
    assert parsed is not None
    key_id, secret = parsed
    assert f"key {key_id} for tenant acme" in created.out
    assert "only time" in created.out

    stored_hash = hash_secret(PEPPER_TEXT.encode(), key_id, secret).hex()
    later = [
        cli.keys("list"), cli.keys("list", as_json=True), cli.keys("list", "--tenant", "acme"),
        cli.keys("show", key_id), cli.keys("show", key_id, as_json=True),
        cli.keys("suspend", key_id), cli.keys("reinstate", key_id, as_json=True),
        cli.keys("revoke", key_id), cli.keys("show", key_id),
    ]
    for result in later:
        assert result.code == 0, result.err
        assert key_id in result.out  # the record is shown ...
        assert key not in result.text  # ... never the key
        assert secret not in result.text
        assert stored_hash not in result.text  # nor the hash


def test_store_file_is_private_and_holds_no_secret(cli: Cli) -> None:
    key, _ = cli.create()
    parsed = parse_key(key)
    assert parsed is not None
    db = cli.tmp / "keys.db"
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    blob = b"".join(p.read_bytes() for p in cli.tmp.glob("keys.db*"))
    assert parsed[1].encode() not in blob
    assert key.encode() not in blob
    assert parsed[0].encode() in blob


def test_json_outputs_parse(cli: Cli) -> None:
    key, record = cli.create("globex", "--network", "198.51.100.0/24", "--label", "team=ml",
                             "--label", "env=prod", "--expires-in", "30d")
    assert re.fullmatch(KEY_PATTERN, key)
    assert record["tenant"] == "globex"
    assert record["status"] == "active"
    assert record["allowed_networks"] == ["198.51.100.0/24"]
    assert record["labels"] == {"team": "ml", "env": "prod"}
    assert record["expires_at"] - record["created_at"] == pytest.approx(30 * 86400)
    assert "secret_hash" not in record
    assert key.startswith("gk_" + record["key_id"])

    listed = cli.keys("list", as_json=True).json()
    assert [r["key_id"] for r in listed] == [record["key_id"]]
    assert listed[0] == record
    assert cli.keys("list", "--tenant", "acme", as_json=True).json() == []
    assert cli.show(record["key_id"]) == record

    revoked = cli.keys("revoke", record["key_id"], as_json=True).json()
    assert revoked["status"] == "revoked"
    assert revoked["updated_at"] >= record["updated_at"]


def test_options_also_follow_the_action(cli: Cli) -> None:
    made = cli.run("keys", "create", "--tenant", "acme", "--json", "--policy", str(cli.policy),
                   "--store", cli.store_url).json()
    listed = cli.run("keys", "--policy", "/nonexistent.yaml", "list", "--policy",
                     str(cli.policy), "--store", cli.store_url, "--json").json()
    assert [r["key_id"] for r in listed] == [made["record"]["key_id"]]  # the later one wins
    plain = cli.run("keys", "--json", "list", "--policy", str(cli.policy), "--store",
                    cli.store_url)
    assert json.loads(plain.out)[0]["key_id"] == made["record"]["key_id"]  # kept from before


def test_list_of_an_empty_store(cli: Cli) -> None:
    result = cli.keys("list")
    assert result.code == 0
    assert "KEY ID" in result.out
    assert "(no keys)" in result.err
    assert cli.keys("list", as_json=True).json() == []


def test_list_filters_by_tenant_in_creation_order(cli: Cli) -> None:
    ids = [cli.create(t)[1]["key_id"] for t in ("acme", "globex", "acme")]
    assert [r["key_id"] for r in cli.keys("list", as_json=True).json()] == ids
    assert [r["key_id"] for r in cli.keys("list", "--tenant", "acme", as_json=True).json()] \
        == [ids[0], ids[2]]
    table = cli.keys("list", "--tenant", "globex").out
    assert ids[1] in table and ids[0] not in table and ids[2] not in table


# --- errors: one line, exit 2, no traceback -------------------------------------------------------

def test_create_for_an_unknown_tenant_fails_naming_it(cli: Cli) -> None:
    result = cli.keys("create", "--tenant", "globexx")
    line = result.one_line_error()
    assert '"globexx"' in line
    assert "tenant" in line
    assert str(cli.policy) in line
    assert result.out == ""
    assert cli.keys("list", as_json=True).json() == []  # nothing was stored


FULL_KEY_GIVEN = "gk_AAAAAAAAAAAAbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb000000"


@pytest.mark.parametrize(("action", "key_id", "expect"), [
    ("show", "not-an-id", "is not a key id"),
    ("show", "short", "is not a key id"),
    ("show", "AAAAAAAAAAAAA", "is not a key id"),  # 13 characters
    ("show", "AAAAAA\u00e9AAAAA", "is not a key id"),
    ("show", FULL_KEY_GIVEN, "not the full key"),
    ("revoke", FULL_KEY_GIVEN, "not the full key"),
    ("suspend", "short", "is not a key id"),
    ("reinstate", "short", "is not a key id"),
    ("rotate", FULL_KEY_GIVEN, "not the full key"),
])
def test_invalid_key_id_is_a_clear_error(cli: Cli, action: str, key_id: str,
                                         expect: str) -> None:
    line = cli.keys(action, key_id).one_line_error()
    assert "key_id" in line
    assert expect in line
    assert FULL_KEY_GIVEN[15:] not in line  # a pasted key is not echoed whole


@pytest.mark.parametrize("action", ["show", "revoke", "suspend", "reinstate", "rotate"])
def test_unknown_key_id_is_a_clear_error(cli: Cli, action: str) -> None:
    line = cli.keys(action, "AAAAAAAAAAAA").one_line_error()
    assert "no key with id 'AAAAAAAAAAAA'" in line


def test_missing_policy_is_a_clear_error(cli: Cli) -> None:
    result = cli.run("keys", "--store", cli.store_url, "list")
    line = result.one_line_error()
    assert "--policy" in line
    assert "GATEKEEPER_POLICY" in line
    assert "(missing)" in line


def test_policy_from_the_environment(cli: Cli) -> None:
    env = clean_env(GATEKEEPER_POLICY=str(cli.policy))
    result = cli.run("keys", "--store", cli.store_url, "--json", "create", "--tenant", "acme",
                     env=env)
    assert result.code == 0, result.err
    assert json.loads(result.out)["record"]["tenant"] == "acme"


def test_unreadable_policy_file_is_a_clear_error(cli: Cli) -> None:
    result = cli.run("keys", "--policy", str(cli.tmp / "nope.yaml"), "list")
    assert result.code == 2
    assert "Traceback" not in result.text
    assert "nope.yaml" in result.err
    assert "cannot be read" in result.err


@pytest.mark.parametrize(("store", "expect"), [
    ("redis:///0", "must name a host"),
    ("postgres://db/keys", "is not a store URL"),
    ("sqlite://relative.db", "must look like"),
])
def test_bad_store_flag_is_a_clear_error(cli: Cli, store: str, expect: str) -> None:
    result = cli.run("keys", "--policy", str(cli.policy), "--store", store, "list")
    line = result.one_line_error()
    assert line.startswith(f'gatekeeper: error: --store: "{store}"')
    assert expect in line


def test_unusable_store_file_is_a_clear_error(cli: Cli) -> None:
    (cli.tmp / "dir.db").mkdir()
    result = cli.run("keys", "--policy", str(cli.policy), "--store",
                     f"sqlite:///{cli.tmp / 'dir.db'}", "list")
    line = result.one_line_error()
    assert "store open failed" in line


@pytest.mark.parametrize(("args", "field_name"), [
    (["--network", "not-a-network"], "networks[0]"),
    (["--network", "192.0.2.0/24", "--network", "300.1.1.1/8"], "networks[1]"),
    (["--label", "novalue"], "--label[0]"),
    (["--label", "=x"], "--label[0]"),
    (["--expires-in", "soon"], "--expires-in"),
    (["--expires-in=-5d"], "--expires-in"),
    (["--expires-in", "0s"], "--expires-in"),
])
def test_bad_create_options_name_the_option(cli: Cli, args: list[str], field_name: str) -> None:
    line = cli.keys("create", "--tenant", "acme", *args).one_line_error()
    assert field_name in line
    assert cli.keys("list", as_json=True).json() == []


FOUR_HUNDRED_DIGITS = "9" * 400


@pytest.mark.parametrize(("args", "field_name", "problem"), [
    (["--expires-in", FOUR_HUNDRED_DIGITS], "--expires-in", "at most 10 years"),
    (["--expires-in", FOUR_HUNDRED_DIGITS + "w"], "--expires-in", "at most 10 years"),
    (["--expires-in", "3651d"], "--expires-in", "at most 10 years"),
    (["--expires-in", "0"], "--expires-in", "at least 1 second"),
    (["--expires-in", "0.0000001s"], "--expires-in", "at least 1 second"),
    (["--expires-in", "1e9"], "--expires-in", "is not a duration"),
    (["--expires-in", "nan"], "--expires-in", "is not a duration"),
])
def test_unbounded_expiry_is_refused_before_anything_is_written(
        cli: Cli, args: list[str], field_name: str, problem: str) -> None:
    line = cli.keys("create", "--tenant", "acme", *args).one_line_error()
    assert f"gatekeeper: error: {field_name}: " in line
    assert problem in line
    assert len(line) < 300
    assert cli.keys("list", as_json=True).json() == []


@pytest.mark.parametrize("grace", [FOUR_HUNDRED_DIGITS, "3651d", "-1h", "1e400"])
def test_unbounded_grace_is_refused_before_anything_is_written(cli: Cli, grace: str) -> None:
    _, old = cli.create()
    line = cli.keys("rotate", old["key_id"], f"--grace={grace}").one_line_error()
    assert "--grace" in line
    assert [r["key_id"] for r in cli.keys("list", as_json=True).json()] == [old["key_id"]]
    assert cli.show(old["key_id"]) == old  # not even the old key's expiry was touched


def test_a_zero_grace_ends_the_old_key_now(cli: Cli) -> None:
    _, old = cli.create()
    rotated = cli.keys("rotate", old["key_id"], "--grace", "0", as_json=True).json()
    assert cli.show(old["key_id"])["expires_at"] == pytest.approx(
        rotated["record"]["created_at"])


@pytest.mark.anyio
@pytest.mark.parametrize("expires", [math.inf, -math.inf, math.nan, 1e300, -1e300, 2e11])
async def test_list_and_show_never_crash_on_an_odd_stored_time(cli: Cli, expires: float) -> None:
    """Records written by earlier releases (or by hand) may hold any float."""
    _, made = cli.create()
    store = store_from_url(cli.store_url)
    try:
        record = await store.get_key(made["key_id"])
        assert record is not None
        await store.update_key(record.with_changes(expires_at=expires, created_at=expires,
                                                   updated_at=expires), record.version)
    finally:
        await store.close()
    for args in (("list",), ("show", made["key_id"])):
        text = cli.keys(*args)
        assert text.code == 0, text.err
        assert "Traceback" not in text.text
        assert made["key_id"] in text.out
        data = cli.keys(*args, as_json=True)
        assert data.code == 0, data.err
        json.loads(data.out, parse_constant=lambda name: pytest.fail(f"not JSON: {name}"))


@pytest.mark.anyio
async def test_the_library_bounds_expiry_and_grace_too() -> None:
    policy = compile_policy({"tenants": {"acme": {}}})
    store = MemoryStore()
    pepper = PEPPER_TEXT.encode()
    now = 1_700_000_000.0
    for expires in (math.inf, math.nan, now + 11 * 365 * 86400):
        with pytest.raises(ConfigError) as info:
            await key_admin.create_key(store, pepper, policy, "acme", now, expires_at=expires)
        assert info.value.field == "expires_at"
    _, record = await key_admin.create_key(store, pepper, policy, "acme", now)
    for grace in (math.inf, math.nan, -1.0, 11 * 365 * 86400.0):
        with pytest.raises(ConfigError) as info:
            await key_admin.rotate_key(store, pepper, record.key_id, now, grace)
        assert info.value.field == "grace"
    assert await store.list_keys() == [record]


# --- status changes -------------------------------------------------------------------------------

def test_revoke_then_show_reports_revoked(cli: Cli) -> None:
    _, record = cli.create()
    key_id = record["key_id"]
    revoked = cli.keys("revoke", key_id)
    assert revoked.code == 0
    assert re.search(r"^status\s+revoked$", revoked.out, re.M)
    shown = cli.keys("show", key_id)
    assert re.search(r"^status\s+revoked$", shown.out, re.M)
    assert re.search(r"^key_id\s+" + key_id + "$", shown.out, re.M)
    assert cli.show(key_id)["status"] == "revoked"
    assert "revoked" in cli.keys("list").out


def test_a_revoked_key_stays_revoked(cli: Cli) -> None:
    _, record = cli.create()
    key_id = record["key_id"]
    cli.keys("revoke", key_id)
    for action in ("reinstate", "suspend", "rotate"):
        line = cli.keys(action, key_id).one_line_error()
        assert "revoked" in line, action
    assert cli.show(key_id)["status"] == "revoked"
    assert cli.keys("revoke", key_id).code == 0  # revoking again is harmless


def test_show_prints_labels_and_networks_as_text_not_python(cli: Cli) -> None:
    _, record = cli.create("acme", "--label", "team=ml", "--label", "env=prod", "--network",
                           "192.0.2.0/28", "--network", "192.0.2.64/28")
    shown = cli.keys("show", record["key_id"]).out
    assert re.search(r"^labels\s+team=ml, env=prod$", shown, re.M), shown
    assert re.search(r"^allowed_networks\s+192.0.2.0/28, 192.0.2.64/28$", shown, re.M), shown
    assert "{" not in shown and "[" not in shown and "'" not in shown


def test_suspend_and_reinstate(cli: Cli) -> None:
    _, record = cli.create()
    key_id = record["key_id"]
    suspended = cli.keys("suspend", key_id, as_json=True).json()
    assert suspended["status"] == "suspended"
    assert cli.show(key_id)["status"] == "suspended"
    assert re.search(r"^status\s+suspended$", cli.keys("show", key_id).out, re.M)
    line = cli.keys("rotate", key_id).one_line_error()
    assert "suspended" in line and "only active keys rotate" in line
    reinstated = cli.keys("reinstate", key_id, as_json=True).json()
    assert reinstated["status"] == "active"
    assert cli.show(key_id)["status"] == "active"


def test_rotate_issues_a_new_key_and_gives_the_old_one_a_grace_period(cli: Cli) -> None:
    old_key, old = cli.create("acme", "--label", "team=ml", "--network", "192.0.2.0/28")
    before = time.time()
    rotated = cli.keys("rotate", old["key_id"], "--grace", "2h", as_json=True).json()
    after = time.time()
    new_key, new = rotated["key"], rotated["record"]

    assert re.fullmatch(KEY_PATTERN, new_key)
    assert new_key != old_key
    assert new["key_id"] != old["key_id"]
    assert new["status"] == "active"
    assert new["rotated_from"] == old["key_id"]
    assert new["tenant"] == "acme"
    assert new["labels"] == {"team": "ml"}
    assert new["allowed_networks"] == ["192.0.2.0/28"]
    assert new["expires_at"] is None

    old_now = cli.show(old["key_id"])
    assert old_now["status"] == "active"
    assert before + 7200 - 1 <= old_now["expires_at"] <= after + 7200 + 1
    assert cli.show(new["key_id"])["status"] == "active"
    assert [r["key_id"] for r in cli.keys("list", as_json=True).json()] == [
        old["key_id"], new["key_id"]]


def test_rotate_text_output_prints_the_new_key_once(cli: Cli) -> None:
    old_key, old = cli.create()
    result = cli.keys("rotate", old["key_id"])  # default grace: 24h
    assert result.code == 0, result.err
    found = re.findall(KEY_PATTERN, result.text)
    assert len(found) == 1
    assert found[0] != old_key
    assert f"The old key {old['key_id']} stays valid until" in result.out
    assert old_key not in result.text
    old_now = cli.show(old["key_id"])
    assert old_now["expires_at"] == pytest.approx(time.time() + 86400, abs=60)
    assert found[0] not in cli.keys("list").text


def test_rotate_keeps_an_earlier_expiry(cli: Cli) -> None:
    _, old = cli.create("acme", "--expires-in", "1h")
    cli.keys("rotate", old["key_id"], "--grace", "7d", as_json=True).json()
    assert cli.show(old["key_id"])["expires_at"] == pytest.approx(old["expires_at"])


def test_rotate_with_a_bad_grace_is_a_clear_error(cli: Cli) -> None:
    _, old = cli.create()
    line = cli.keys("rotate", old["key_id"], "--grace", "a while").one_line_error()
    assert "--grace" in line
    assert len(cli.keys("list", as_json=True).json()) == 1  # no replacement issued


@pytest.mark.anyio
async def test_rotating_an_expired_key_is_refused() -> None:
    policy = compile_policy({"tenants": {"acme": {}}})
    store = MemoryStore()
    pepper = PEPPER_TEXT.encode()
    now = 1_700_000_000.0
    _, record = await key_admin.create_key(store, pepper, policy, "acme", now,
                                           expires_at=now + 60)
    with pytest.raises(ConfigError, match="has expired"):
        await key_admin.rotate_key(store, pepper, record.key_id, now + 61, 3600.0)
    assert [r.key_id for r in await store.list_keys()] == [record.key_id]
    key, new, _ = await key_admin.rotate_key(store, pepper, record.key_id, now + 59, 3600.0)
    assert new.expires_at == now + 60
    assert parse_key(key) is not None


# --- peppers and policies ------------------------------------------------------------------------

def test_pepper_prints_a_long_random_pepper(cli: Cli) -> None:
    first, second = cli.run("pepper"), cli.run("pepper")
    assert first.code == second.code == 0
    a, b = first.out.strip(), second.out.strip()
    assert len(a.encode()) >= 32
    assert "\n" not in a
    assert a != b
    assert re.fullmatch(r"[A-Za-z0-9_-]+", a)


@pytest.mark.anyio
async def test_a_printed_pepper_works_from_the_environment(cli: Cli, tmp_path: Path) -> None:
    pepper = cli.run("pepper").out.strip()
    policy = tmp_path / "env-policy.yaml"
    policy.write_text("tenants:\n  acme: {}\n")
    env = clean_env(GATEKEEPER_PEPPER=pepper)
    result = cli.run("keys", "--policy", str(policy), "--store", cli.store_url, "--json",
                     "create", "--tenant", "acme", env=env)
    assert result.code == 0, result.err
    key = json.loads(result.out)["key"]
    parsed = parse_key(key)
    assert parsed is not None
    db_store = store_from_url(cli.store_url)
    try:
        record = await db_store.get_key(parsed[0])
    finally:
        await db_store.close()
    assert record is not None
    assert record.secret_hash == hash_secret(pepper.encode(), *parsed)


def test_missing_pepper_is_a_clear_error(cli: Cli, tmp_path: Path) -> None:
    policy = tmp_path / "env-policy.yaml"
    policy.write_text("tenants:\n  acme: {}\n")
    result = cli.run("keys", "--policy", str(policy), "--store", cli.store_url,
                     "create", "--tenant", "acme")
    line = result.one_line_error()
    assert "keys.pepper_env" in line
    assert "GATEKEEPER_PEPPER" in line
    assert "gatekeeper pepper" in line


def test_short_pepper_is_refused_without_showing_it(cli: Cli, tmp_path: Path) -> None:
    policy = tmp_path / "env-policy.yaml"
    policy.write_text("tenants:\n  acme: {}\n")
    result = cli.run("keys", "--policy", str(policy), "--store", cli.store_url,
                     "create", "--tenant", "acme", env=clean_env(GATEKEEPER_PEPPER="tooShort99"))
    line = result.one_line_error()
    assert "10 bytes" in line
    assert "tooShort99" not in line


def test_store_named_by_the_policy(cli: Cli, tmp_path: Path) -> None:
    db = tmp_path / "from-policy.db"
    policy = tmp_path / "store-policy.yaml"
    policy.write_text(cli.policy.read_text() + f'store: "sqlite:///{db}"\n')
    result = cli.run("keys", "--policy", str(policy), "--json", "create", "--tenant", "acme")
    assert result.code == 0, result.err
    assert db.exists()
    assert not (tmp_path / "keys.db").exists()
    assert not (tmp_path / "gatekeeper-keys.db").exists()


@pytest.mark.anyio
async def test_cli_and_server_find_one_relative_store_from_any_directory(
        cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`store: sqlite:///keys.db` means next to the policy, wherever each process starts."""
    conf, here, there = tmp_path / "conf", tmp_path / "here", tmp_path / "there"
    for d in (conf, here, there):
        d.mkdir()
    policy = conf / "policy.yaml"
    policy.write_text(cli.policy.read_text() + 'store: "sqlite:///keys.db"\n')
    made = cli.run("keys", "--policy", str(policy), "--json", "create", "--tenant", "acme")
    assert made.code == 0, made.err
    assert (conf / "keys.db").exists()
    for cwd in (here, there):
        assert not (cwd / "keys.db").exists()
    listed = subprocess.run([*cli.command, "keys", "--policy", "../conf/policy.yaml", "--json",
                             "list"], capture_output=True, text=True, cwd=there, env=cli.env,
                            timeout=60)
    assert [r["key_id"] for r in json.loads(listed.stdout)] == [made.json()["record"]["key_id"]]
    checked = cli.run("check-config", str(policy))
    assert f"store: sqlite:///{conf.resolve() / 'keys.db'}" in checked.out

    monkeypatch.chdir(there)  # a server started somewhere else
    loaded = load_policy(policy)
    store = store_from_url(loaded.store or "", create=False)
    auth = Authenticator(store, load_pepper(loaded.keys))
    try:
        principal = await auth.authenticate(
            Credential(CredentialKind.API_KEY, made.json()["key"], "authorization"), time.time())
        assert isinstance(principal, Principal), principal
    finally:
        await store.close()


def test_check_config_on_a_good_policy(cli: Cli) -> None:
    result = cli.run("check-config", str(cli.policy))
    assert result.code == 0, result.err
    assert "ok" in result.out
    assert "2 tenants" in result.out
    assert "/v1/*" in result.out
    assert result.err == ""


def test_check_config_warns_about_a_missing_pepper_but_passes(cli: Cli, tmp_path: Path) -> None:
    policy = tmp_path / "no-pepper.yaml"
    policy.write_text("tenants:\n  acme: {}\n")
    result = cli.run("check-config", str(policy))
    assert result.code == 0
    assert "warning" in result.err
    assert "GATEKEEPER_PEPPER" in result.err


@pytest.mark.parametrize(("yaml_text", "field_name"), [
    ("tenants:\n  acme:\n    allowed_networks: ['not-a-network']\n",
     "tenants.acme.allowed_networks[0]"),
    ("tenants:\n  acme: {}\ntenantz: {}\n", "tenantz"),
    ("version: 2\ntenants:\n  acme: {}\n", "version"),
    ("routes:\n  protect: ['v1/*']\n", "routes.protect[0]"),
    ("store: 'redis://cache:port/0'\n", "store"),
    ("keys:\n  cache_ttl: 600\n", "keys.cache_ttl"),
    ("tenants:\n  acme: {}\n  acme: {}\n", "duplicate key 'acme'"),
    ("tenants: [\n", "is not valid YAML"),
])
def test_check_config_on_a_bad_policy_names_the_field(cli: Cli, tmp_path: Path, yaml_text: str,
                                                      field_name: str) -> None:
    policy = tmp_path / "bad.yaml"
    policy.write_text(yaml_text)
    result = cli.run("check-config", str(policy))
    assert result.code != 0
    assert result.code == 2
    assert "Traceback" not in result.text
    assert field_name in result.err
    assert str(policy) in result.err
    assert result.out == ""


def test_check_config_lists_every_error_at_once(cli: Cli, tmp_path: Path) -> None:
    policy = tmp_path / "bad.yaml"
    policy.write_text("tenants:\n  acme:\n    allowed_networks: ['x']\n    disabled: maybe\n"
                      "routes:\n  public: ['healthz']\n")
    result = cli.run("check-config", str(policy))
    assert result.code == 2
    assert "3 errors" in result.err
    for name in ("tenants.acme.allowed_networks[0]", "tenants.acme.disabled",
                 "routes.public[0]"):
        assert name in result.err


def test_usage_errors_exit_2_without_a_traceback(cli: Cli) -> None:
    for args in ([], ["keys"], ["nope"], ["keys", "--policy", str(cli.policy), "create"]):
        result = cli.run(*args)
        assert result.code == 2, args
        assert "usage:" in result.err
        assert "Traceback" not in result.text


def test_the_module_runs_as_a_script(cli: Cli) -> None:
    result = cli.run("check-config", str(cli.policy))
    assert result.code == 0
    proc = subprocess.run([sys.executable, "-m", "gatekeeper.cli.main", "check-config",
                           str(cli.policy)], capture_output=True, text=True, cwd=cli.tmp,
                          env=cli.env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == result.out


# --- keys the CLI makes authenticate in process ---------------------------------------------------

def facts_from(key: str, client: str) -> RequestFacts:
    cred = Credential(CredentialKind.API_KEY, key, "authorization")
    return RequestFacts("POST", "/v1/chat/completions", parse_ip(client), cred, None, None, None)


@pytest.mark.anyio
async def test_a_cli_key_authenticates_and_a_cli_revocation_reaches_a_running_server(
        cli: Cli) -> None:
    key, record = cli.create("acme")
    policy = load_policy(cli.policy)
    pepper = load_pepper(policy.keys)
    store = store_from_url(cli.store_url)
    now = time.time()
    clock = ManualClock(now)
    auth = Authenticator(store, pepper, cache_ttl=policy.keys.cache_ttl, clock=clock)
    try:
        principal = await auth.authenticate(
            Credential(CredentialKind.API_KEY, key, "authorization"), now)
        assert isinstance(principal, Principal), principal
        assert principal.tenant == "acme"
        assert principal.key_id == record["key_id"]
        assert principal.status is KeyStatus.ACTIVE
        allowed = decide(facts_from(key, "192.0.2.7"), principal, policy, now)
        assert allowed.reason is OK
        assert allowed.tenant == "acme"

        typo = key[:-1] + ("A" if key[-1] != "A" else "B")
        bad = await auth.authenticate(Credential(CredentialKind.API_KEY, typo, "api-key"), now)
        assert isinstance(bad, Refusal) and bad.reason is CREDENTIAL_MALFORMED

        wrong_pepper = Authenticator(store, pepper + b"x")
        unknown = await wrong_pepper.authenticate(
            Credential(CredentialKind.API_KEY, key, "authorization"), now)
        assert isinstance(unknown, Refusal) and unknown.reason is KEY_UNKNOWN

        # revoke from another process while this "server" keeps its store open
        assert cli.keys("revoke", record["key_id"]).code == 0
        later = now + policy.keys.cache_ttl + 0.01
        clock.set(later)
        revoked = await auth.authenticate(
            Credential(CredentialKind.API_KEY, key, "authorization"), later)
        assert isinstance(revoked, Principal)
        assert revoked.status is KeyStatus.REVOKED
        assert decide(facts_from(key, "192.0.2.7"), revoked, policy, later).reason \
            is KEY_REVOKED
    finally:
        await store.close()


@pytest.mark.anyio
async def test_both_keys_authenticate_during_a_rotation_grace_period(cli: Cli) -> None:
    old_key, old = cli.create("globex")
    rotated = cli.keys("rotate", old["key_id"], "--grace", "1h", as_json=True).json()
    policy = load_policy(cli.policy)
    store = store_from_url(cli.store_url)
    auth = Authenticator(store, load_pepper(policy.keys))
    now = time.time()
    try:
        for key, key_id in ((old_key, old["key_id"]),
                            (rotated["key"], rotated["record"]["key_id"])):
            principal = await auth.authenticate(
                Credential(CredentialKind.API_KEY, key, "authorization"), now)
            assert isinstance(principal, Principal), principal
            assert principal.tenant == "globex"
            assert principal.key_id == key_id
        old_principal = await auth.authenticate(
            Credential(CredentialKind.API_KEY, old_key, "authorization"), now)
        assert isinstance(old_principal, Principal)
        assert old_principal.expires_at is not None
        assert now < old_principal.expires_at <= now + 3600 + 5
    finally:
        await store.close()


def test_cli_command_is_found(cli: Cli) -> None:
    command: Sequence[str] = cli_command()
    assert command
    result = cli.run("--help")
    assert result.code == 0
    assert "keys" in result.out and "check-config" in result.out and "pepper" in result.out


# --- countries: create --country, update --country ----------------------------------------------

def test_create_binds_a_key_to_countries_checked_like_the_policy(cli: Cli) -> None:
    _, record = cli.create("acme", "--country", "de,FR", "--country", "it")
    assert record["countries"] == ["DE", "FR", "IT"]
    assert re.search(r"^countries\s+DE, FR, IT$", cli.keys("show", record["key_id"]).out, re.M)
    line = cli.keys("create", "--tenant", "acme", "--country", "DE,UK").one_line_error()
    assert "--country[1]" in line and "UK" in line and "did you mean GB?" in line
    assert "--country[0]" in cli.keys("create", "--tenant", "acme",
                                       "--country", "Germany").one_line_error()


def test_update_sets_and_clears_a_keys_countries(cli: Cli) -> None:
    _, record = cli.create("acme")
    key_id = record["key_id"]
    assert record["countries"] == []
    assert cli.keys("update", key_id, "--country", "FR", as_json=True).json()["countries"] == \
        ["FR"]
    assert cli.show(key_id)["countries"] == ["FR"]
    assert cli.keys("update", key_id, "--country", "none", as_json=True).json()["countries"] \
        == []
    assert "is not an ISO 3166-1" in cli.keys("update", key_id, "--country", "ZZ") \
        .one_line_error()
    assert cli.show(key_id)["countries"] == []


def test_rotation_keeps_the_countries(cli: Cli) -> None:
    _, record = cli.create("acme", "--country", "DE")
    rotated = cli.keys("rotate", record["key_id"], as_json=True).json()
    assert rotated["record"]["countries"] == ["DE"]
