"""`gatekeeper demo` (what `make demo` runs) as a new user meets it: the commands its banner
prints work as printed in a fresh shell, a busy port is one clear line, old demo keys do not
pile up, and /metrics is not served to the world."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gatekeeper import load_policy, store_from_url
from gatekeeper.demo.app import build_demo_app, write_demo_policy
from gatekeeper.demo.run import issue_demo_keys
from gatekeeper.principal import KeyStatus
from tests.serving import wait_until_up

FRESH_SHELL = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"),
               "LANG": "C.UTF-8"}
"""What a new terminal has: no activated virtualenv, no PYTHONPATH."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def demo_command(port: int, directory: Path) -> list[str]:
    return [sys.executable, "-m", "gatekeeper.cli.main", "demo", "--port", str(port),
            "--dir", str(directory)]


@pytest.fixture
def banner(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A running demo and (its base URL, its banner)."""
    port = free_port()
    demo = subprocess.Popen(demo_command(port, tmp_path / "demo"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert demo.stdout is not None
        lines = []
        for line in demo.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C"):
                break
        base = f"http://127.0.0.1:{port}"
        wait_until_up(base, what="".join(lines))
        yield base, "".join(lines)
    finally:
        demo.terminate()
        demo.communicate(timeout=10)


def fresh_shell(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True,
                          env=FRESH_SHELL, cwd=cwd, timeout=60)


def test_the_banners_commands_work_as_printed_in_a_fresh_shell(
        banner: tuple[str, str], tmp_path: Path) -> None:
    _, text = banner
    commands = [line.strip() for line in text.splitlines()
                if " keys --policy " in line or " -c \"from openai" in line]
    assert len(commands) == 3, text
    elsewhere = tmp_path / "a-fresh-terminal"
    elsewhere.mkdir()
    listed = fresh_shell(next(c for c in commands if c.endswith(" list")), elsewhere)
    assert listed.returncode == 0, listed.stderr
    assert "acme" in listed.stdout and "globex" in listed.stdout
    chat = fresh_shell(next(c for c in commands if "from openai" in c), elsewhere)
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.startswith("Hello acme!")
    key_id = re.findall(r"^(\w{12})\s+acme\s+active", listed.stdout, re.M)[0]
    revoke = next(c for c in commands if " revoke " in c)
    revoke = revoke.split("   (")[0].replace("<KEY ID>", key_id)
    revoked = fresh_shell(revoke, elsewhere)
    assert revoked.returncode == 0, revoked.stderr
    assert re.search(r"^status\s+revoked$", revoked.stdout, re.M)


def test_the_banners_limit_command_gets_429_on_the_fourth_request(
        banner: tuple[str, str], tmp_path: Path) -> None:
    _, text = banner
    command = next(line.strip() for line in text.splitlines() if line.strip().startswith("for i"))
    expected = next(line for line in text.splitlines() if "-> 200 200 200 429" in line)
    ran = fresh_shell(command, tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["200", "200", "200", "429"], (ran.stdout, expected)


def test_the_demos_metrics_are_served_to_this_machine_only(banner: tuple[str, str]) -> None:
    base, text = banner
    assert "gatekeeper_decisions" in httpx.get(f"{base}/metrics").text
    assert "this machine only" in text


@pytest.mark.anyio
@pytest.mark.parametrize(("peer", "status"), [
    (("127.0.0.1", 1), 200), (("::1", 1), 200), (("::ffff:127.0.0.1", 1), 200),
    (("203.0.113.5", 1), 403), (("192.168.1.20", 1), 403), (("10.0.0.1", 1), 403),
    (None, 403),
])
async def test_demo_metrics_refuse_clients_that_are_not_loopback(
        tmp_path: Path, peer: tuple[str, int] | None, status: int) -> None:
    policy = write_demo_policy(tmp_path)
    await issue_demo_keys(policy)
    app, _ = build_demo_app(policy)
    transport = httpx.ASGITransport(app=app, client=peer)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
        response = await client.get("/metrics")
        assert response.status_code == status
        assert ("gatekeeper_decisions" in response.text) == (status == 200)
        assert (await client.get("/healthz")).status_code == 200
    await app.aclose()


def test_a_busy_port_is_one_clear_line_before_any_key_is_issued(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(demo_command(port, tmp_path / "demo"), capture_output=True,
                                text=True, timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"gatekeeper: error: --port: {port} ")
    assert "in use" in lines[0] and "--port" in lines[0]
    assert not (tmp_path / "demo" / "keys.db").exists()  # no key was issued


@pytest.mark.anyio
async def test_demo_keys_expire_and_a_new_run_revokes_the_last_ones(tmp_path: Path) -> None:
    policy_path = write_demo_policy(tmp_path)
    now = time.time()
    await issue_demo_keys(policy_path)
    policy = load_policy(policy_path)
    store = store_from_url(policy.store or "", create=False)
    try:
        first = await store.list_keys()
        assert len(first) == 6
        for record in first:
            assert record.expires_at is not None
            assert now + 86400 - 60 <= record.expires_at <= now + 86400 + 60
        await issue_demo_keys(policy_path)
        after = {r.key_id: r for r in await store.list_keys()}
        assert len(after) == 12
        assert all(after[r.key_id].status is KeyStatus.REVOKED for r in first)
        newest = [r for r in after.values() if r.key_id not in {f.key_id for f in first}]
        assert sorted(r.status.value for r in newest) == ["active", "active", "active",
                                                          "active", "active", "revoked"]
    finally:
        await store.close()

