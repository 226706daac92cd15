"""benchmarks/RESULTS.md, written by four scripts: each owns one section between markers and
rewrites only that, so running one never erases what the others measured."""

from __future__ import annotations

import datetime
import os
import platform
import re
from importlib import metadata
from pathlib import Path

DEFAULT_PATH = Path(__file__).resolve().parent / "RESULTS.md"
TITLE = "# gatekeeper hot-path benchmark"
SECTIONS = {
    "instructions": "python benchmarks/instructions.py --tree before=/path/to/old "
                    "--tree after=.",
    "before-after": "python benchmarks/before_after.py --tree before=/path/to/old "
                    "--tree after=.",
    "hot-path": "python benchmarks/hot_path.py",
    "http": "python benchmarks/http_load.py",
    "redis": "python benchmarks/redis_path.py",
}
"""Section name -> the command that writes it, in the order they appear."""

INTRO = """\
Five scripts write this file, each into its own section (see `benchmarks/README.md`):
`instructions.py` (instructions per request under cachegrind, before and after), `before_after.py`
(the same workload timed in two checkouts, interleaved), `hot_path.py` (this tree: every
scenario, gatekeeper's own cost, the per-stage table), `http_load.py` (over HTTP: uvicorn
driven by wrk on loopback) and `redis_path.py` (limits on a real Redis, round trips counted).

**The machine is shared and noisy** (2 cores, other jobs running): in-process timings wander by
up to ±30% between rounds and between runs. Every timed number below is the median of paired
per-round differences (a scenario against its baseline measured seconds apart in the same round),
which cancels most of the drift, but not all of it. For before/after comparisons trust the
instruction counts: they do not move with machine load.
"""


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- begin {name} -->", f"<!-- end {name} -->"


def _placeholder(name: str) -> str:
    begin, end = _markers(name)
    return f"{begin}\n_Not run yet: `{SECTIONS[name]}`._\n{end}\n"


def skeleton() -> str:
    return "\n".join([TITLE, "", INTRO, *map(_placeholder, SECTIONS)])


def update(path: Path, name: str, text: str) -> None:
    """Replace section ``name`` of ``path`` with ``text``. The file is created when missing
    or foreign, and rebuilt when a section has one marker without the other; a section that
    has neither (one added since the file was written) is appended, so the others are kept."""
    if name not in SECTIONS:
        raise ValueError(f"unknown section {name!r}")
    current = path.read_text(encoding="utf-8") if path.exists() else ""
    if not current.startswith(TITLE) or any(
            (begin in current) != (end in current) for begin, end in map(_markers, SECTIONS)):
        current = skeleton()
    for missing in SECTIONS:
        if _markers(missing)[0] not in current:
            current = f"{current.rstrip()}\n\n{_placeholder(missing)}"
    begin, end = _markers(name)
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
    replacement = f"{begin}\n{text.strip()}\n{end}"
    path.write_text(pattern.sub(lambda _: replacement, current), encoding="utf-8")


def machine() -> list[str]:
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "?"

    packages = ", ".join(f"{d} {version(d)}" for d in (
        "starlette", "slowapi", "limits", "PyJWT", "prometheus_client"))
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return [
        f"- date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- python: {platform.python_version()} ({platform.python_implementation()})",
        f"- platform: {platform.platform()} ({platform.machine()})",
        f"- cpu count: {os.cpu_count()}; load average at the end (1/5/15 min): {load}",
        f"- packages: {packages}",
    ]
