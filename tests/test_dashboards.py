"""examples/grafana-dashboard.json and examples/prometheus-alerts.yml: valid, and every metric,
reason and outcome they name exists in a real /metrics exposition, so a renamed metric breaks
this test instead of a dashboard nobody looks at until an incident."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gatekeeper.policy.notify import EVENTS
from gatekeeper.reasons import OK, REFUSALS
from tests.exposition import metric_names, scrape

pytestmark = pytest.mark.anyio
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DASHBOARD = EXAMPLES / "grafana-dashboard.json"
ALERTS = EXAMPLES / "prometheus-alerts.yml"
NAME = re.compile(r"\bgatekeeper_[a-z0-9_]+")
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__range": "1h", "$instance": ".*"}


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [t["expr"] for p in board["panels"] for t in p["targets"]]


def alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"]]


def _label_values(expr: str, label: str) -> set[str]:
    values: set[str] = set()
    for op, text in re.findall(rf'\b{label}\s*(=~|=|!=|!~)\s*"([^"]*)"', expr):
        values.update(text.split("|") if op in ("=~", "!~") else [text])
    return values


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) >= 6
    for panel in board["panels"]:
        assert panel["title"] and panel["targets"], panel.get("title")
        assert panel["datasource"]["type"] == "prometheus"
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))
    variables = {v["name"] for v in board["templating"]["list"]}
    for expr in dashboard_exprs():
        assert set(re.findall(r"\$(\w+)", expr)) <= variables | {"__rate_interval", "__range"}


def test_the_alerts_cover_what_an_sre_pages_on() -> None:
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert rule["labels"]["severity"] in ("info", "warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
    text = "\n".join(r["expr"] for r in rules)
    assert "sum by (reason)" in text  # refusal spikes per reason
    assert "store_unavailable" in text
    assert "histogram_quantile(0.99" in text and "gatekeeper_added_latency_seconds_bucket" in text
    assert "rate_limited" in text  # the share of 429s
    assert "gatekeeper_store_fail_open" in text  # fail-open active
    assert "gatekeeper_flagged_total" in text and 'reason="key_suspended"' in text
    assert "gatekeeper_webhooks_total" in text and "failed|dropped" in text


async def test_every_metric_reason_and_outcome_named_exists_in_a_real_exposition() -> None:
    exposed = metric_names(await scrape())
    codes = {r.code for r in (OK, *REFUSALS)}
    for source, exprs in (("dashboard", dashboard_exprs()),
                          ("alerts", [r["expr"] for r in alert_rules()])):
        for expr in exprs:
            named = set(NAME.findall(expr))
            assert named, (source, expr)
            assert named <= exposed, (source, named - exposed)
            assert _label_values(expr, "reason") <= codes, (source, expr)
            assert _label_values(expr, "outcome") <= {"allow", "refuse"}, (source, expr)
            assert _label_values(expr, "result") <= {"delivered", "failed", "dropped"}, expr
            assert _label_values(expr, "event") <= set(EVENTS), (source, expr)


def test_promtool_accepts_the_alerts_and_the_dashboard_queries(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing under CI=true: .ci/run installs Debian's prometheus")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    checked = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # the dashboard's queries, with Grafana's variables filled in, as recording rules
    rules = []
    for i, expr in enumerate(dashboard_exprs()):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"gatekeeper:dashboard_query_{i}", "expr": expr})
    as_rules = tmp_path / "dashboard-queries.yml"
    as_rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = subprocess.run([promtool, "check", "rules", str(as_rules)], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
