"""``gatekeeper keys create/update`` with a key's own limits, and ``gatekeeper limits show``,
run as real subprocesses against a real SQLite file (the helpers of ``test_cli.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_cli import Cli, cli_with

LIMITS_POLICY = """\
version: 1
keys:
  pepper_file: "{pepper}"
prices:
  "gpt-4o*": {{input: 2.5, output: 10}}
  default: {{input: 5, output: 15}}
tenants:
  acme:
    limits:
      requests: 100/minute
      monthly_spend: 500
      per_tenant: {{daily_tokens: 1000000}}
  globex: {{}}
"""


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return cli_with(tmp_path, LIMITS_POLICY)


def limits(cli: Cli, *args: str) -> str:
    result = cli.run("limits", "show", "--policy", str(cli.policy), "--store", cli.store_url,
                     *args)
    assert result.code == 0, result.err
    return result.out


def test_create_with_limits_stores_them_on_the_record(cli: Cli) -> None:
    _, record = cli.create("acme", "--rpm", "60", "--concurrency", "4", "--monthly-spend",
                           "12.5", "--daily-tokens", "5000")
    assert record["limits"] == {"requests": "60/minute", "concurrency": 4,
                                "daily_tokens": 5000, "monthly_spend": 12.5}
    assert cli.show(record["key_id"])["limits"] == record["limits"]
    text = cli.keys("show", record["key_id"]).out
    assert "monthly_spend=$12.5" in text and "requests=60/minute" in text


def test_update_changes_and_clears_limits(cli: Cli) -> None:
    _, record = cli.create("acme", "--rpm", "60", "--tpm", "9000")
    key_id = record["key_id"]
    updated = cli.keys("update", key_id, "--rpm", "none", "--monthly-requests", "300",
                       as_json=True).json()
    assert updated["limits"] == {"tokens": "9000/minute", "monthly_requests": 300}
    assert updated["version"] == record["version"] + 1
    assert cli.show(key_id)["limits"] == updated["limits"]
    line = cli.keys("update", key_id).one_line_error()
    assert "changes nothing" in line


@pytest.mark.parametrize(("args", "flag", "problem"), [
    (["--rpm", "0"], "--rpm", "whole number"),
    (["--rpm", "-1"], "--rpm", "whole number"),
    (["--tpm", "lots"], "--tpm", "whole number"),
    (["--concurrency", "2.5"], "--concurrency", "whole number"),
    (["--monthly-spend", "abc"], "--monthly-spend", "dollars"),
    (["--daily-spend", "0"], "--daily-spend", "more than 0"),
    (["--rpm", "101"], "--rpm", "would widen tenant acme's requests limit (100/60s)"),
    (["--monthly-spend", "500.01"], "--monthly-spend", "would widen"),
])
def test_bad_or_widening_limits_are_refused_naming_the_flag(cli: Cli, args: list[str],
                                                            flag: str, problem: str) -> None:
    line = cli.keys("create", "--tenant", "acme", *args).one_line_error()
    assert flag in line and problem in line
    assert cli.keys("list", as_json=True).json() == []  # nothing was written


def test_update_refuses_a_widening_and_keeps_the_record(cli: Cli) -> None:
    _, record = cli.create("acme", "--rpm", "60")
    line = cli.keys("update", record["key_id"], "--rpm", "1000").one_line_error()
    assert "--rpm" in line and "only narrow" in line
    assert cli.show(record["key_id"])["limits"] == {"requests": "60/minute"}


def test_a_tenant_without_limits_accepts_any_key_limit(cli: Cli) -> None:
    _, record = cli.create("globex", "--rpm", "100000", "--monthly-spend", "5")
    assert record["limits"] == {"requests": "100000/minute", "monthly_spend": 5}


def test_limits_show_for_a_key(cli: Cli) -> None:
    _, record = cli.create("acme", "--rpm", "60", "--concurrency", "4")
    out = limits(cli, record["key_id"])
    assert f"limits for key {record['key_id']} of tenant acme" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line[:1].isalpha()}
    assert rows["requests"] == ["100/60s", "60/60s", "60/60s"]
    assert rows["concurrency"] == ["-", "4", "4"]
    assert rows["monthly_spend"] == ["$500", "-", "$500"]
    assert "per_tenant: daily_tokens=1000000" in out
    assert f"gk:{{t:acme}}:k{record['key_id']}:rq:60/60" in out
    assert ":ms:20" in out and "gk:{t:acme}:all:dt:20" in out
    charged = {line.split()[0]: line.split()[1:4] for line in out.splitlines()
               if line.startswith("  gk:")}
    assert charged[f"gk:{{t:acme}}:k{record['key_id']}:rq:60/60"] == ["rate", "requests",
                                                                      "60/60s"]
    assert next(v for k, v in charged.items() if ":ms:" in k) == ["quota", "spend", "$500"]
    assert "in the server process (memory store)" in out and "Redis" in out


def test_limits_show_json_and_for_a_tenant(cli: Cli) -> None:
    result = cli.run("limits", "show", "--tenant", "acme", "--policy", str(cli.policy),
                     "--json")
    view = result.json()
    assert view["key_id"] is None and view["per_key"]["effective"] == {
        "requests": "100/60s", "monthly_spend": "$500"}
    keys = [c["key"] for c in view["storage_keys"]]
    assert keys[0] == "gk:{t:acme}:k<KEY_ID>:rq:100/60"
    spend = next(c for c in view["storage_keys"] if c["unit"] == "spend")
    assert spend["limit"] == 500_000_000 and spend["until"].endswith("-01 00:00:00Z")


def test_limits_show_marks_a_key_limit_clamped_by_a_stricter_policy(cli: Cli) -> None:
    _, record = cli.create("acme", "--rpm", "80")
    cli.policy.write_text(cli.policy.read_text().replace("100/minute", "50/minute"))
    out = limits(cli, record["key_id"])
    assert "50/60s (key's clamped)" in out and "clamped:" in out


@pytest.mark.parametrize(("args", "expect"), [
    ([], "needs a KEY_ID or --tenant"),
    (["--tenant", "nope"], "is not a tenant"),
    (["AAAAAAAAAAAA"], "AAAAAAAAAAAA"),
    (["gk_notakey"], "is not a key id"),
])
def test_limits_show_errors_are_one_line(cli: Cli, args: list[str], expect: str) -> None:
    result = cli.run("limits", "show", "--policy", str(cli.policy), "--store", cli.store_url,
                     *args)
    assert expect in result.one_line_error()


def test_rotation_carries_the_key_limits_over(cli: Cli) -> None:
    _, record = cli.create("acme", "--rpm", "60")
    rotated = cli.keys("rotate", record["key_id"], as_json=True).json()["record"]
    assert rotated["limits"] == {"requests": "60/minute"}


def test_limits_show_says_which_counters_are_in_lease_mode(tmp_path: Path) -> None:
    cli = cli_with(tmp_path, LIMITS_POLICY.replace(
        "      monthly_spend: 500\n", "      monthly_spend: 500\n      lease: {{requests: 10}}\n"))
    result = cli.run("limits", "show", "--tenant", "acme", "--policy", str(cli.policy), "--json")
    leases = {c["unit"]: c.get("lease") for c in result.json()["storage_keys"]}
    assert leases == {"requests": {"slice": 10, "ttl": 2.0}, "spend": None, "tokens": None}
    text = cli.run("limits", "show", "--tenant", "acme", "--policy", str(cli.policy)).out
    line = next(x for x in text.splitlines() if ":rq:100/60" in x)
    assert line.endswith("  lease mode: slice 10, ttl 2s"), text
    assert text.count("lease mode") == 1
