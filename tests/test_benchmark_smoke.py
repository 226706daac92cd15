"""The benchmarks run end to end in --quick mode and their checks pass. No timing is asserted."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = (
    "bare", "noop-middleware", "slowapi", "gk-api-key", "gk-jwt", "gk-garbage-key",
    "gk-wrong-network", "gk-forged-key", "gk-wrong-network-audited", "gk-public-path",
    "bare-healthz", "trivial", "noop-over-trivial", "gk-over-trivial", "gk-country", "gk-miss",
    "gk-country-miss",
)
STAGES = ("route-memo", "clocks", "scan", "prepare", "metrics", "route-answer", "facts",
          "authenticate", "decide", "evaluate-allow", "evaluate-refuse", "audit", "geo-stage",
          "geo-none")


def bench(*argv: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_quick_hot_path_runs(tmp_path: Path) -> None:
    output = tmp_path / "results.md"
    out = bench("benchmarks/hot_path.py", "--quick", "--output", str(output)).stdout
    for name in SCENARIOS:
        assert re.search(rf"^\| \S+ \| {re.escape(name)} \|", out, re.MULTILINE), name
    for stage in STAGES:
        assert re.search(rf"^\| `{re.escape(stage)}` \| .* \| -?\d+\.\d+ \|", out,
                         re.MULTILINE), stage
    assert re.search(r"^\| \*\*gatekeeper, cached API key.* \| trivial \| \*\*[+-]\d+\.\d+\*\* \|",
                     out, re.MULTILINE), out
    assert re.search(r"^- gk-garbage-key: .*all 401 credential_malformed, app never called "
                     r"\(0 calls\)", out, re.MULTILINE), out
    assert re.search(r"^- gk-wrong-network: .*all 403 network_not_allowed, app never called",
                     out, re.MULTILINE), out
    assert re.search(r"^- gk-over-trivial: .*metrics recorded \d+ allow decisions", out,
                     re.MULTILINE), out
    assert "gk-jwt: 1 signature verification in total" in out
    assert "gatekeeper.audit logger silenced" in out
    text = output.read_text(encoding="utf-8")
    assert text.startswith("# gatekeeper hot-path benchmark")
    # the other scripts' sections are kept, waiting for their runs
    assert "<!-- begin instructions -->" in text and "<!-- end hot-path -->" in text


def test_stage_child_runs_every_stage() -> None:
    for stage in ("empty-call", *STAGES):
        out = bench("benchmarks/stages.py", "--stage", stage, "--calls", "3").stdout
        assert f'"stage": "{stage}"' in out


def test_quick_before_after_runs(tmp_path: Path) -> None:
    output = tmp_path / "results.md"
    out = bench("benchmarks/before_after.py", "--quick", "--tree", f"this={ROOT}",
                "--output", str(output)).stdout
    assert re.search(r"^\| \*\*gatekeeper, cached API key.*\| trivial \| [+-]\d+\.\d+ ", out,
                     re.MULTILINE), out
    assert re.search(r"^- this: gk-over-trivial: .*the store was read once$", out,
                     re.MULTILINE), out
    assert "<!-- begin before-after -->\n## Before and after, timed" in \
        output.read_text(encoding="utf-8")


@pytest.mark.skipif(shutil.which("valgrind") is None,
                    reason="valgrind is not installed: instructions.py is an optional tool "
                           "(CI images may lack it; apt-get install valgrind to run this)")
def test_quick_instruction_count_runs(tmp_path: Path) -> None:
    output = tmp_path / "results.md"
    out = bench("benchmarks/instructions.py", "--quick", "--scenarios", "gk-over-trivial",
                "--output", str(output), timeout=900).stdout
    own = re.search(r"^\| \*\*gatekeeper, cached API key.*\| trivial \| ([\d,]+) \|", out,
                    re.MULTILINE)
    assert own is not None, out
    assert int(own.group(1).replace(",", "")) > 0
    assert re.search(r"^- this tree: gk-over-trivial: .*the store was read once$", out,
                     re.MULTILINE), out
    assert "<!-- begin instructions -->\n## Before and after, in instructions" in \
        output.read_text(encoding="utf-8")


HTTP_VARIANTS = ("bare", "noop-middleware", "slowapi", "gk-api-key", "gk-limits",
                 "gk-limits-country")


@pytest.mark.skipif(shutil.which("wrk") is None,
                    reason="wrk is not installed: http_load.py needs it (apt-get install wrk)")
def test_quick_http_load_runs(tmp_path: Path) -> None:
    output = tmp_path / "results.md"
    out = bench("benchmarks/http_load.py", "--quick", "--no-install", "--output",
                str(output)).stdout
    redis = ("gk-limits-redis", "gk-limits-lease") if shutil.which("redis-server") else ()
    for name in HTTP_VARIANTS + redis:  # one row per connection count: 1 and 16
        rows = re.findall(rf"^\| {re.escape(name)} \| [\d,]+ \(.*\| \d+\.\d \(", out,
                          re.MULTILINE)
        assert len(rows) == 2, (name, out)
    assert re.search(r"^- gk-limits: 200 with the chat reply before and after timing; a "
                     r"malformed key refused with 401 credential_malformed; x-ratelimit "
                     r"headers present; [\d,]+ timed requests, no wrk error", out,
                     re.MULTILINE), out
    assert re.search(r"^- slowapi \(one in-memory limit\) keeps "
                     r"\*\*\d+%\*\*", out, re.MULTILINE), out
    assert "<!-- begin http -->\n## Over HTTP: uvicorn" in output.read_text(encoding="utf-8")


def test_http_load_skips_without_wrk() -> None:
    env = dict(os.environ, PATH="/nonexistent", PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run([sys.executable, "benchmarks/http_load.py", "--quick", "--no-install"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
                          env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("SKIPPED: wrk is not installed: install it"), done.stdout


def test_results_update_keeps_sections_when_a_new_one_is_added(tmp_path: Path) -> None:
    from benchmarks import results

    path = tmp_path / "results.md"
    older = "\n".join(line for line in results.skeleton().splitlines()
                      if "http" not in line)  # a file written before the http section existed
    path.write_text(older.replace("_Not run yet: `python benchmarks/hot_path.py`._",
                                  "measured hot path"), encoding="utf-8")
    results.update(path, "http", "measured over HTTP")
    text = path.read_text(encoding="utf-8")
    assert "<!-- begin hot-path -->\nmeasured hot path\n<!-- end hot-path -->" in text
    assert text.rstrip().endswith("<!-- begin http -->\nmeasured over HTTP\n<!-- end http -->")


def test_quick_redis_path_runs() -> None:
    """The Redis rows, briefly: every scenario answered and was counted by the server (under
    CI=true redis-server must be there; locally the script says it skipped)."""
    import os
    import shutil

    if shutil.which("redis-server") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is missing under CI=true")
        pytest.skip("redis-server not installed")
    out = bench("benchmarks/redis_path.py", "--quick").stdout
    for name in ("evalsha", "slowapi-redis", "gk-one-limit-redis", "gk-limits-redis"):
        assert re.search(rf"^\| {name} \| .* \| \d+\.\d\d \|$", out, re.MULTILINE), out
    one = re.search(r"^\| gk-one-limit-redis \| .* \| (\d+\.\d\d) \|$", out, re.MULTILINE)
    assert one is not None and float(one.group(1)) == 1.0  # one round trip per request
    full = re.search(r"^\| gk-limits-redis \| .* \| (\d+\.\d\d) \|$", out, re.MULTILINE)
    # one apply each, carrying the previous response's end; the timer sends the last one
    assert full is not None and 1.0 <= float(full.group(1)) <= 1.05
    lease = re.search(r"^\| gk-limits-lease \| .* \| (\d+\.\d\d) \|$", out, re.MULTILINE)
    assert lease is not None and float(lease.group(1)) <= 0.05  # issue #18's lease-mode bar


def test_lua_parts_prints_a_cost_for_every_part() -> None:
    """The script calibration, briefly: every part was called and timed by the server."""
    import os
    import shutil

    if shutil.which("redis-server") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is missing under CI=true")
        pytest.skip("redis-server not installed")
    out = bench("benchmarks/lua_parts.py", "--calls", "200").stdout
    costs = dict(re.findall(r"^\| (.+) \| (\d+\.\d\d) \|$", out, re.MULTILINE))
    assert len(costs) == 10 and "return 1" in costs, out  # lua_parts.PARTS
    assert all(float(us) > 0 for us in costs.values()), out


def test_lua_replay_gives_each_apply_the_time_its_reply_carried() -> None:
    """A recorded apply that asked for the server's time is replayed with the time the server
    answered with (so the lease ids it hands out match the releases recorded after it); a
    settle gets the last apply's, and commands keep their order per connection."""
    from benchmarks.lua_replay import _wire, commands

    apply = [b"EVALSHA", b"a" * 40, b"1", b"gk:{t}:cc", b"", b"plan"]
    settle = [b"EVALSHA", b"s" * 40, b"1", b"gk:{t}:cc", b"", b"42", b""]
    reply = (1_700_000_000_000_123).to_bytes(8, "little") + (1).to_bytes(8, "little")
    chunks = [(0, "c", _wire([b"PING"])), (0, "s", b"+PONG\r\n"),
              (0, "c", _wire(apply)), (0, "s", b"$16\r\n" + reply + b"\r\n"),
              (1, "c", _wire(settle)), (1, "s", b":1\r\n")]
    order = commands(chunks)
    assert [conn for conn, _ in order] == [0, 0, 1]
    assert order[0][1] == [b"PING"]
    assert order[1][1][4] == b"1700000000000123" and order[1][1][5] == b"plan"
    assert order[2][1][4] == b"1700000000000123"


@pytest.mark.skipif(shutil.which("valgrind") is None or shutil.which("redis-server") is None,
                    reason="valgrind or redis-server is not installed: lua_replay.py is an "
                           "optional tool (apt-get install valgrind redis-server to run this)")
def test_lua_replay_counts_the_server_per_call() -> None:
    out = bench("benchmarks/lua_replay.py", "--scenario", "gk-one-limit-redis",
                "--requests", "50").stdout
    found = re.search(r"(\d+) calls, ([\d,]+) in all", out)
    assert found is not None, out
    assert int(found.group(1)) >= 50 and int(found.group(2).replace(",", "")) > 0, out
