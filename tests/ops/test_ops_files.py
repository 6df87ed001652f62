"""The ready-made operations files: the alert rules pass promtool and their unit tests, and the rules
and the Grafana dashboard name only metrics a running server exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import aiohttp
import pytest
import yaml

from service.server import BillingServer

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "ops" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "ops" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "ops" / "grafana" / "billing.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian: apt-get install prometheus)"
)

# A metric name in PromQL: ours all start with one of these prefixes.
_METRIC = re.compile(r"\b((?:grpc_server|billing)_[a-z0-9_]+)\b")
_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}


def _rule_exprs() -> dict[str, str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return {rule["alert"]: rule["expr"] for group in rules["groups"] for rule in group["rules"]}


def _dashboard_exprs() -> dict[str, str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return {
        f"{panel['title']} / {target['refId']}": target["expr"]
        for panel in dashboard["panels"]
        for target in panel["targets"]
    }


async def _exported_names(metrics_port: int) -> set[str]:
    """Every sample name the server can export, from the TYPE lines (a labelled counter that has not
    counted yet has no samples, but is declared)."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{metrics_port}/metrics") as response,
    ):
        text = await response.text()
    names: set[str] = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE):
        # The text format declares a counter as `x_total`, whose samples are x_total and x_created.
        base = name.removesuffix("_total") if kind == "counter" else name
        names.update(base + suffix for suffix in _SUFFIXES.get(kind, ("",)))
    return names


async def test_alerts_and_dashboard_name_only_exported_metrics(app: BillingServer) -> None:
    assert app.metrics_port
    exported = await _exported_names(app.metrics_port)
    for where, exprs in (("alerts.yml", _rule_exprs()), ("billing.json", _dashboard_exprs())):
        assert exprs, where
        for name, expr in exprs.items():
            used = set(_METRIC.findall(expr))
            assert used, f"{where} {name}: no metric of ours in {expr!r}"
            assert used <= exported, f"{where} {name}: {sorted(used - exported)} not exported"


def test_the_dashboard_is_grafana_json_over_one_prometheus_data_source() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]


@needs_promtool
def test_promtool_checks_the_rules_and_runs_their_unit_tests() -> None:
    assert PROMTOOL is not None
    for args in (("check", "rules", str(ALERTS)), ("test", "rules", str(ALERT_TESTS))):
        result = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, cwd=ROOT)
        assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", ALERT_TESTS.read_text()))
    assert tested == set(_rule_exprs()), "every alert has a unit test"


@needs_promtool
def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    # promtool parses rule expressions: give it each query as a recording rule, with Grafana's own
    # variables filled in as Grafana would.
    filled = {
        name: expr.replace("$__rate_interval", "5m").replace('=~"$job"', '=~".*"')
        for name, expr in _dashboard_exprs().items()
    }
    rules = [{"record": f"dashboard:query_{n}", "expr": expr} for n, expr in enumerate(filled.values())]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert PROMTOOL is not None
    result = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
