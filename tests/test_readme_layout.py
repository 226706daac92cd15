"""The README's layout table names every module, so a newcomer finds each one in one guess."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent


def _layout() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"^## Layout\n(.*?)^## ", text, re.S | re.M)
    assert found, "README.md lost its Layout section"
    return found.group(1)


def test_every_module_is_in_the_layout_table() -> None:
    layout = _layout()
    named = set(re.findall(r"`([\w/]+(?:\.py)?/?)`", layout))
    missing = []
    for path in sorted((ROOT / "gatekeeper").rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if path.name == "__init__.py" or path.name == "types.py":
            continue
        folder = relative.rsplit("/", 1)[0] + "/"
        if relative not in named and path.name not in named and folder not in named:
            missing.append(relative)
    assert missing == [], f"add these to README.md's Layout table: {missing}"
