"""``policy_diff`` and ``gatekeeper check-config --diff OLD NEW``: what a reload would change,
with exit codes a deploy script can branch on (0 same, 1 reloadable, 2 invalid, 3 restart)."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import yaml

from gatekeeper import compile_policy
from gatekeeper.policy.diff import Change, policy_diff
from tests.test_cli import Result, clean_env, cli_command

OLD: dict[str, Any] = {
    "store": "sqlite:///keys.db",
    "routes": {"protect": ["/v1/*"], "public": ["/healthz"]},
    "keys": {"cache_ttl": 1.0},
    "jwt": {"issuers": {"corp": {"issuer": "https://sso.test/", "audiences": ["gk"],
                                 "algorithms": ["HS256"], "secret_env": "JWT_SECRET"}}},
    "tenants": {"acme": {"allowed_networks": ["10.0.0.0/8"],
                         "limits": {"requests": "60/minute"}},
                "globex": {}, "initech": {"disabled": True}},
}


def changed(**edits: Any) -> dict[str, Any]:
    data = copy.deepcopy(OLD)
    for path, value in edits.items():
        *parents, last = path.split("__")
        node = data
        for step in parents:
            node = node.setdefault(step, {})
        if value is None:
            del node[last]
        else:
            node[last] = value
    return data


def test_the_same_policy_reordered_changes_nothing() -> None:
    same = changed(tenants={"initech": {"disabled": True}, "globex": {},
                            "acme": OLD["tenants"]["acme"]})
    assert policy_diff(compile_policy(OLD), compile_policy(same, "elsewhere.yaml")).empty


def test_tenants_fields_routes_and_issuers_are_named() -> None:
    new = changed(tenants__newco={}, tenants__globex=None,
                  tenants__acme__limits={"requests": "30/minute"},
                  tenants__acme__allowed_networks=["10.0.0.0/8", "192.0.2.0/24"],
                  routes__public=["/healthz", "/metrics"], jwt__issuers__corp__leeway=5)
    diff = policy_diff(compile_policy(OLD), compile_policy(new))
    assert diff.tenants_added == ("newco",) and diff.tenants_removed == ("globex",)
    fields = {c.field: c for c in diff.changes}
    assert set(fields) == {"tenants.acme.allowed_networks",
                           "tenants.acme.limits.per_key.requests", "routes.public",
                           "issuers.corp.leeway"}
    assert fields["tenants.acme.limits.per_key.requests"] == Change(
        "tenants.acme.limits.per_key.requests", "60/60s", "30/60s")
    assert fields["routes.public"].new == ["/healthz", "/metrics"]
    assert not diff.restart_needed


def test_store_and_pepper_changes_need_a_restart_and_hide_secrets() -> None:
    new = changed(store="sqlite:///other.db", keys__pepper_env="OTHER_PEPPER")
    diff = policy_diff(compile_policy({**OLD, "store": "sqlite:///a.db"}), compile_policy(new))
    marked = {c.field: c for c in diff.changes if not c.reloadable}
    assert set(marked) == {"store", "keys.pepper_env"} and diff.restart_needed
    assert marked["keys.pepper_env"].new == "(not shown)"


def _cli(*args: str, cwd: Path) -> Result:
    done = subprocess.run([*cli_command(), *args], capture_output=True, text=True, cwd=cwd,
                          env=clean_env(), timeout=60)
    return Result(done.returncode, done.stdout, done.stderr)


def _write(tmp_path: Path, name: str, data: Any) -> str:
    (tmp_path / name).write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return name


def test_cli_diff_exit_codes_and_lines(tmp_path: Path) -> None:
    old = _write(tmp_path, "old.yaml", OLD)
    same = _cli("check-config", "--diff", old, old, cwd=tmp_path)
    assert same.code == 0 and "changes nothing" in same.out

    reload = _write(tmp_path, "new.yaml", changed(tenants__newco={}, tenants__initech=None,
                                                  tenants__globex={"disabled": True}))
    applied = _cli("check-config", "--diff", old, reload, cwd=tmp_path)
    assert applied.code == 1, applied.text
    assert applied.out.splitlines()[:3] == ["+ tenants.newco: added",
                                            "- tenants.initech: removed",
                                            "~ tenants.globex.disabled: false -> true"]
    assert "would apply 3 changes" in applied.out

    restart = _write(tmp_path, "restart.yaml", changed(store="sqlite:///other.db"))
    refused = _cli("check-config", "--diff", old, restart, cwd=tmp_path)
    assert refused.code == 3, refused.text
    assert f"! store: sqlite:///{tmp_path}/keys.db -> sqlite:///{tmp_path}/other.db " \
           "(not reloadable: restart)" in refused.out

    invalid = _write(tmp_path, "invalid.yaml", changed(tenants__acme__limits={"requests": 5}))
    bad = _cli("check-config", "--diff", old, invalid, cwd=tmp_path)
    assert bad.code == 2 and "tenants.acme.limits.requests" in bad.err
    assert "Traceback" not in bad.text


def test_cli_diff_needs_two_policies_and_check_config_takes_one(tmp_path: Path) -> None:
    old = _write(tmp_path, "old.yaml", OLD)
    one = _cli("check-config", "--diff", old, cwd=tmp_path)
    assert "--diff" in one.one_line_error() and "OLD NEW" in one.err
    two = _cli("check-config", old, old, cwd=tmp_path)
    assert "--diff OLD NEW" in two.one_line_error()
    assert _cli("check-config", old, cwd=tmp_path).code == 0  # unchanged without --diff
