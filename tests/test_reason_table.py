"""The README's reason-code table is the code's table: same rows, same order, same words."""

from __future__ import annotations

import re
from pathlib import Path

from gatekeeper.reasons import REFUSALS, reason_table_markdown

README = Path(__file__).parent.parent / "README.md"


def _readme_table() -> str:
    text = README.read_text(encoding="utf-8")
    found = re.search(r"<!-- reason-table:start[^\n]*-->\n(.*?)\n<!-- reason-table:end -->",
                      text, re.S)
    assert found, "README.md lost its reason-table markers"
    return found.group(1)


def test_readme_table_is_the_generated_table() -> None:
    assert _readme_table() == reason_table_markdown(), (
        "README reason table is out of date; paste gatekeeper.reasons.reason_table_markdown()")


def test_readme_rows_are_every_code_with_its_status() -> None:
    rows = re.findall(r"^\| `([a-z_]+)` \| (\d{3}) \|", _readme_table(), re.M)
    assert rows == [(r.code, str(r.status)) for r in REFUSALS]
