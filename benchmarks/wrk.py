"""The load tool: finding (or installing) ``wrk``, and one bounded run of it against a port.

``wrk`` (Debian package ``wrk``) keeps a fixed number of connections busy for a fixed time and
measures latency per request with a histogram; ``chat_request.lua`` makes every request the
chat completion and prints wrk's summary as one JSON line, read here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "chat_request.lua"
MARKER = "BENCH-RESULT "
ERRORS = ("connect", "read", "write", "status", "timeout")
"""wrk's error counters; ``status`` counts answers of 400 and above."""


class WrkUnavailable(Exception):
    """No wrk on PATH (and none could be installed): the HTTP benchmark cannot run."""


class WrkFailed(Exception):
    """wrk exited non-zero or printed no summary."""


def find_wrk(install: bool) -> tuple[str, str]:
    """The path to wrk and a note for the report. Where wrk is missing and ``install`` is set
    and we run as root, ``apt-get install -y wrk`` is tried (and said)."""
    found = shutil.which("wrk")
    if found is not None:
        return found, f"wrk found at {found}"
    if not install or not hasattr(os, "geteuid") or os.geteuid() != 0 \
            or shutil.which("apt-get") is None:
        raise WrkUnavailable("wrk is not installed: install it (Debian/Ubuntu: apt-get install "
                             "wrk; macOS: brew install wrk) and run again")
    print("wrk is not installed: running apt-get install -y wrk (we are root)", flush=True)
    done = subprocess.run(["apt-get", "install", "-y", "wrk"], capture_output=True, text=True,
                          check=False)
    found = shutil.which("wrk")
    if found is None:
        raise WrkUnavailable(f"apt-get install -y wrk failed: {done.stderr.strip()[-500:]}")
    return found, "wrk installed by this run (apt-get install -y wrk)"


def wrk_version(wrk: str) -> str:
    out = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
    return (out.stdout + out.stderr).split("Copyright")[0].strip() or "?"


@dataclass(frozen=True)
class WrkRun:
    requests: int
    seconds: float
    p50_us: float
    p99_us: float
    errors: dict[str, int]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def run_wrk(wrk: str, port: int, connections: int, seconds: int,
            headers: list[tuple[str, str]], body: bytes) -> WrkRun:
    """One run: one wrk thread (the server gets the other core), ``connections`` kept busy for
    ``seconds``, latency recorded. Raises WrkFailed when wrk fails or prints no summary."""
    env = dict(os.environ, BENCH_BODY=body.decode(),
               BENCH_HEADERS="\n".join(f"{k}: {v}" for k, v in headers))
    done = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "--latency",
         "-s", str(SCRIPT), f"http://127.0.0.1:{port}/v1/chat/completions"],
        capture_output=True, text=True, env=env, check=False, timeout=seconds + 60)
    line = next((x for x in done.stdout.splitlines() if x.startswith(MARKER)), None)
    if done.returncode != 0 or line is None:
        raise WrkFailed(f"wrk failed (exit {done.returncode}): {done.stdout[-500:]}"
                           f"{done.stderr[-500:]}")
    data = json.loads(line[len(MARKER):])
    return WrkRun(int(data["requests"]), data["duration_us"] / 1e6, float(data["p50_us"]),
                  float(data["p99_us"]), {k: int(data[k]) for k in ERRORS})
