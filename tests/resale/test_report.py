"""The HTML report: self-contained, escaped, every key's timeline with its mark; and, where
Debian's chromium is installed, opened in it headless and read back."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from gatekeeper.resale.report import MAX_POINTS, Timelines, render


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.urls += [v or "" for k, v in attrs if k in ("src", "href")]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(page: str) -> _Page:
    parsed = _Page()
    parsed.feed(page)
    return parsed


def _timelines() -> Timelines:
    found = Timelines()
    for i in range(2000):
        found.add("key<1>", "proxy & co", 1e9 + i, 200.0 if i == 1234 else i % 7,
                  "suspend" if i > 1500 else "allow")
    found.mark("key<1>", 1e9 + 1000, "first abuse")
    found.mark("key<1>", 1e9 + 1500, "later")  # only the first mark counts
    found.add("quiet", "office", 1e9, 0.0, "allow")
    return found


def test_the_page_is_self_contained_escaped_and_marked() -> None:
    page = render("a <title>", [("Scenarios", [["scenario", "recall"], ["x<y", "99%"]])],
                  _timelines(), ["note & more"])
    parsed = _parse(page)
    assert "script" not in parsed.tags and parsed.urls == []
    assert "<y" not in page and "x&lt;y" in page and "key&lt;1&gt;" in page
    assert parsed.tags.count("svg") == 2 and parsed.tags.count("polyline") == 2
    text = "".join(parsed.text)
    assert "first abuse" in text and "later" not in text
    assert "2000 requests, highest score 200, 499 not allowed" in text
    assert page.index("proxy &amp; co") < page.index("office")  # highest score first
    polyline = page.split('<polyline points="')[1].split('"')[0]
    assert len(polyline.split()) == MAX_POINTS  # thinned, and the peak kept:
    assert any(point.endswith(",10.0") for point in polyline.split())


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium not installed")
def test_simulate_report_in_headless_chromium(tmp_path: Path) -> None:
    from tests.test_cli import clean_env, cli_command

    done = subprocess.run([*cli_command(), "simulate", "--keys", "1", "--seed", "2",
                           "--report", "r.html"], cwd=tmp_path, env=clean_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    chromium = ["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                "--window-size=1000,1400"]
    dom = subprocess.run([*chromium, "--dump-dom", (tmp_path / "r.html").as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    parsed = _parse(dom)
    text = " ".join(parsed.text)
    for expected in ("gatekeeper simulate", "Scenarios", "fan-out-resale", "travelling-dev",
                     "first abuse", "Keys (10 of 10, highest score first)"):
        assert expected in text, expected
    assert parsed.tags.count("svg") == 10 and parsed.tags.count("tr") == 11
    shot = subprocess.run([*chromium, f"--screenshot={tmp_path / 'r.png'}",
                           (tmp_path / "r.html").as_uri()], capture_output=True, timeout=120)
    assert shot.returncode == 0
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
