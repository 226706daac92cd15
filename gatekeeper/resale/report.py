"""The HTML report of ``replay --report`` and ``simulate --report``: one self-contained page
(inline CSS and SVG, no script, no CDN, no network) with the summary table and, per key, a
timeline of its score and actions, the first abuse (simulate) or first flag (replay) marked.

``Timelines`` collects points as requests are scored; ``render`` is a pure function of it.
A key's points are thinned to at most ``MAX_POINTS`` for drawing (the highest score of each
stretch is kept, so no peak disappears).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field

from gatekeeper.decision import ALLOW
from gatekeeper.errors import ConfigError

MAX_POINTS = 400
WIDTH, HEIGHT = 900, 120
COLOURS = {"flag": "#e0a000", "throttle": "#e06000", "block": "#c00000",
           "suspend": "#700070"}


@dataclass
class Timeline:
    key_id: str
    label: str
    points: list[tuple[float, float, str]] = field(default_factory=list)
    """(ts, score, action) per request."""
    mark: float | None = None
    mark_text: str = ""


@dataclass
class Timelines:
    keys: dict[str, Timeline] = field(default_factory=dict)

    def add(self, key_id: str, label: str, ts: float, score: float, action: str) -> None:
        line = self.keys.get(key_id)
        if line is None:
            line = self.keys[key_id] = Timeline(key_id, label)
        line.points.append((ts, score, action))

    def mark(self, key_id: str, ts: float, text: str) -> None:
        """Mark the first ``ts`` given for a key (first abuse, first flag)."""
        line = self.keys.get(key_id)
        if line is not None and line.mark is None:
            line.mark, line.mark_text = ts, text


def render(title: str, tables: Sequence[tuple[str, list[list[str]]]], timelines: Timelines,
           notes: Sequence[str] = (), most: int = 40) -> str:
    """The page: ``tables`` as (heading, rows; the first row is the header), then the
    timelines of at most ``most`` keys, highest score first."""
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>"
             f"{_e(title)}</title><style>{_CSS}</style></head><body><h1>{_e(title)}</h1>"]
    parts += [f"<p>{_e(note)}</p>" for note in notes]
    for heading, rows in tables:
        parts.append(f"<h2>{_e(heading)}</h2><table>")
        for i, row in enumerate(rows):
            cell = "th" if i == 0 else "td"
            parts.append("<tr>" + "".join(f"<{cell}>{_e(c)}</{cell}>" for c in row) + "</tr>")
        parts.append("</table>")
    ranked = sorted(timelines.keys.values(),
                    key=lambda t: (-max((p[1] for p in t.points), default=0), t.label,
                                   t.key_id))[:most]
    parts.append(f"<h2>Keys ({len(ranked)} of {len(timelines.keys)}, highest score first)</h2>")
    parts += [_timeline(line) for line in ranked]
    parts.append("</body></html>")
    return "".join(parts)


def markdown(rows: Sequence[Sequence[str]]) -> list[str]:
    """A table (header row first) as Markdown lines: what the commands print."""
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + " --- |" * len(rows[0])]
    return lines + ["| " + " | ".join(row) + " |" for row in rows[1:]]


def write_report(path: str, page: str) -> None:
    """Write the page; a ConfigError naming ``--report`` when it cannot be written."""
    try:
        with open(path, "w", encoding="utf-8") as out:
            out.write(page)
    except OSError as exc:
        raise ConfigError("--report", path, f"cannot be written: {exc.strerror}") from None


def _timeline(line: Timeline) -> str:
    points = _thin(line.points)
    if not points:
        return ""
    start, end = points[0][0], max(points[-1][0], points[0][0] + 1)
    top = max(max(p[1] for p in points), 1.0)

    def x(ts: float) -> float:
        return round((ts - start) / (end - start) * (WIDTH - 20) + 10, 1)

    def y(score: float) -> float:
        return round(HEIGHT - 10 - score / top * (HEIGHT - 20), 1)

    path = " ".join(f"{x(ts)},{y(score)}" for ts, score, _ in points)
    dots = "".join(f'<circle cx="{x(ts)}" cy="{y(score)}" r="2.5" fill="{COLOURS[a]}">'
                   f"<title>{_e(a)} at score {score:.0f}</title></circle>"
                   for ts, score, a in points if a in COLOURS)
    mark = ""
    if line.mark is not None:
        mx = x(line.mark)
        left = mx > WIDTH - 100  # near the right edge the text goes left of the line
        mark = (f'<line x1="{mx}" x2="{mx}" y1="0" y2="{HEIGHT}" class=mark />'
                f'<text x="{mx - 3 if left else mx + 3}" y="12" class=marktext'
                f'{" text-anchor=end" if left else ""}>{_e(line.mark_text)}</text>')
    peak = max(p[1] for p in line.points)
    acted = sum(1 for p in line.points if p[2] != ALLOW)
    return (f'<div class=key><h3>{_e(line.label)} <code>{_e(line.key_id)}</code> '
            f"<small>{len(line.points)} requests, highest score {peak:.0f}, "
            f"{acted} not allowed</small></h3>"
            f'<svg width="{WIDTH}" height="{HEIGHT}" role=img '
            f'aria-label="score of {_e(line.key_id)} over time">'
            f'<polyline points="{path}" class=score />{dots}{mark}</svg></div>')


def _thin(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """At most ``MAX_POINTS``: the highest-scoring point of each equal stretch (the most
    severe action when scores tie)."""
    if len(points) <= MAX_POINTS:
        return points
    step = len(points) / MAX_POINTS
    return [max(points[int(i * step):int((i + 1) * step)] or points[-1:],
                key=lambda p: (p[1], p[2] != ALLOW)) for i in range(MAX_POINTS)]


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


_CSS = ("body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
        "table{border-collapse:collapse;margin-bottom:1em}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#eee}"
        "svg{background:#fafafa;border:1px solid #ddd}"
        ".score{fill:none;stroke:#2060c0;stroke-width:1.5}"
        ".mark{stroke:#c00000;stroke-dasharray:4 3}.marktext{fill:#c00000;font-size:11px}"
        "h3{font-size:14px;margin:1em 0 .3em}small{color:#666;font-weight:normal}")
