"""``gatekeeper simulate`` and ``gatekeeper replay`` as real subprocesses: the simulation
writes traffic that ``replay`` scores exactly as the simulation did; errors are one line."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

from gatekeeper.replay import RequestRecord
from gatekeeper.resale.scored import replay_scored
from gatekeeper.resale.simulate import PEPPER, locator, ordered, prepare
from tests.test_cli import Result, clean_env, cli_command


def _run(tmp: Path, *args: str) -> Result:
    proc = subprocess.run([*cli_command(), *args], capture_output=True, text=True, cwd=tmp,
                          env=clean_env(), timeout=120)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def _simulated(seed: int) -> list[tuple[float, str, float]]:
    async def main() -> list[tuple[float, str, float]]:
        traffic, world, policy, store = await prepare(seed, 1)
        records = (RequestRecord.from_dict(r) for r in ordered(traffic))
        return [(s.record.ts, s.action, round(s.score.total, 1)) async for s in
                replay_scored(records, policy, store, PEPPER, locate=locator(world))]

    return asyncio.run(main())


def test_simulate_writes_traffic_that_replay_scores_the_same(tmp_path: Path) -> None:
    sim = _run(tmp_path, "simulate", "--seed", "3", "--keys", "1", "--write", "t.jsonl")
    assert sim.code == 0, sim.err
    assert "| fan-out-resale | abuse | 1 |" in sim.out and "flag rate on legitimate" in sim.out
    for name in ("t.jsonl", "t.jsonl.policy.yaml", "t.jsonl.pepper", "t.jsonl.keys.db",
                 "t.jsonl.geo.mmdb"):
        assert (tmp_path / name).exists(), name
    replayed = _run(tmp_path, "replay", "t.jsonl", "--policy", "t.jsonl.policy.yaml",
                    "--out", "d.jsonl", "--report", "r.html")
    assert replayed.code == 0, replayed.err
    assert "replayed" in replayed.err and "| action | requests |" in replayed.out
    assert "| suspend |" in replayed.out and "| key id | tenant | highest score" in replayed.out
    page = (tmp_path / "r.html").read_text()
    assert "<h2>Highest scores</h2>" in page and "<svg" in page
    assert "first flag" in page or "first throttle" in page or "first suspend" in page
    lines = [json.loads(line) for line in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert set(lines[0]) >= {"ts", "key_id", "tenant", "action", "status", "reason", "score"}
    assert [(d["ts"], d["action"], d["score"]) for d in lines] == _simulated(3)


def test_replay_errors_are_one_line(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("routes: {protect: ['/v1/*']}\nstore: memory://\n"
                      "keys: {pepper_env: GK_TEST_PEPPER_UNSET_X}\ntenants: {a: {}}\n")
    (tmp_path / "bad.jsonl").write_text('{"ts": 1, "method": "GET", "path": "/v1/x"}\nnope\n')
    missing_policy = _run(tmp_path, "replay", "bad.jsonl").one_line_error()
    assert "--policy" in missing_policy
    no_pepper = _run(tmp_path, "replay", "bad.jsonl", "--policy", "p.yaml").one_line_error()
    assert "keys.pepper_env" in no_pepper
    (tmp_path / "pepper").write_text("x" * 48)
    (tmp_path / "pepper").chmod(0o600)
    policy.write_text(policy.read_text().replace("pepper_env: GK_TEST_PEPPER_UNSET_X",
                                                 "pepper_file: pepper"))
    bad_line = _run(tmp_path, "replay", "bad.jsonl", "--policy", "p.yaml",
                    "--quiet").one_line_error()
    assert "line 2" in bad_line
    absent = _run(tmp_path, "replay", "nowhere.jsonl", "--policy", "p.yaml").one_line_error()
    assert "nowhere.jsonl" in absent
