"""The hot-path benchmark runs end to end in --quick mode. No timing is asserted."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = (
    "bare", "noop-middleware", "slowapi", "gk-api-key", "gk-jwt", "gk-garbage-key",
    "gk-wrong-network", "gk-forged-key", "gk-wrong-network-audited", "gk-public-path",
    "bare-healthz",
)


def test_quick_benchmark_runs(tmp_path: Path) -> None:
    output = tmp_path / "results.md"
    done = subprocess.run(
        [sys.executable, "benchmarks/hot_path.py", "--quick", "--output", str(output)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for name in SCENARIOS:
        assert re.search(rf"^\| \S+ \| {re.escape(name)} \|", out, re.MULTILINE), name
    assert re.search(r"^- gk-garbage-key: .*all 401 credential_malformed, app never called "
                     r"\(0 calls\)", out, re.MULTILINE), out
    assert re.search(r"^- gk-wrong-network: .*all 403 network_not_allowed, app never called",
                     out, re.MULTILINE), out
    assert "gatekeeper.audit logger silenced" in out
    assert output.read_text(encoding="utf-8").startswith("# gatekeeper hot-path benchmark")
