"""The Grafana dashboard: generated from the recording rules, every query valid and grounded.

"Valid" is decided by a real Prometheus (its query API rejects what does not parse); "grounded"
means every series a query reads is one the stack produces (serving contract, detector metrics,
recording rules, Prometheus' own), found by walking the parsed query.
"""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import promql_parser
import pytest
import yaml
from support.stack import REPO, StackPrometheus, http_json

from demo.dashboard import (
    SIGNAL_DISPLAY,
    build_dashboard,
    dashboard_json,
    dashboard_queries,
    default_dashboard_path,
)
from demo.series import known_series, recorded_signals
from llmwatch.cli import main

pytestmark = pytest.mark.integration

RECORDING = REPO / "configs" / "rules" / "recording.yml"
GRAFANA = REPO / "configs" / "grafana"
# Grafana's built-in variables, replaced as Grafana would before sending a query.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


def _promql(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def _parse_error(prometheus: str, expr: str) -> str | None:
    query = urllib.parse.urlencode({"query": _promql(expr), "time": "1700000000"})
    answer = http_json(f"{prometheus}/api/v1/query?{query}")
    return None if answer["status"] == "success" else answer["error"]


def _series_read(expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(_promql(expr)), visit)
    return names


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(default_dashboard_path().read_text())


def test_committed_dashboard_is_what_the_generator_writes() -> None:
    assert default_dashboard_path().read_text() == dashboard_json(), (
        "configs/grafana/llmwatch.json is stale: run `llmwatch stack dashboard`"
    )


def test_cli_writes_and_checks_the_dashboard(tmp_path: Path) -> None:
    target = tmp_path / "board.json"
    assert main(["stack", "dashboard", "--check", "--out", str(target)]) == 1  # missing
    assert main(["stack", "dashboard", "--out", str(target)]) == 0
    assert target.read_text() == dashboard_json()
    assert main(["stack", "dashboard", "--check", "--out", str(target)]) == 0
    target.write_text(target.read_text().replace("Latency P99", "Latency"))
    assert main(["stack", "dashboard", "--check", "--out", str(target)]) == 1


def test_every_query_parses_in_prometheus(
    dashboard: dict, stack_prometheus: StackPrometheus
) -> None:
    queries = dashboard_queries(dashboard)
    assert len(queries) > 40
    failures = {q: err for q in queries if (err := _parse_error(stack_prometheus.url, q))}
    assert failures == {}
    # The check can fail: Prometheus rejects a broken query.
    assert "parse error" in _parse_error(stack_prometheus.url, "sum(rate(x[1m])")


def test_every_query_reads_only_series_the_stack_produces(dashboard: dict) -> None:
    known = known_series(RECORDING)
    unknown = {q: _series_read(q) - known for q in dashboard_queries(dashboard)}
    assert {q: names for q, names in unknown.items() if names} == {}


def test_every_recorded_signal_has_its_panel(dashboard: dict) -> None:
    queries = set(dashboard_queries(dashboard))
    titles = {panel["title"] for panel in dashboard["panels"]}
    for signal in recorded_signals(RECORDING):
        assert SIGNAL_DISPLAY[signal].title in titles
        for expr in (
            f"llmwatch:{signal}",
            f'llmwatch_expected_value{{signal="{signal}"}}',
            f'llmwatch_expected_lower{{signal="{signal}"}}',
            f'llmwatch_expected_upper{{signal="{signal}"}}',
            f'llmwatch_anomaly_score{{signal="{signal}"}}',
        ):
            assert expr in queries, f"{signal}: no query {expr}"


def test_seed_panels_and_active_alerts_are_there(dashboard: dict) -> None:
    titles = {panel["title"] for panel in dashboard["panels"]}
    for title in (
        "GPU memory",
        "Latency P95 / P99",
        "Request rate by status",
        "Output tokens per request (distribution)",
        "Active alerts",
    ):
        assert title in titles
    assert 'ALERTS{alertstate="firing"}' in dashboard_queries(dashboard)


def test_panels_do_not_overlap(dashboard: dict) -> None:
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_a_signal_without_display_settings_is_named() -> None:
    with pytest.raises(ValueError, match="'made_up_signal'"):
        build_dashboard(["made_up_signal"])


def test_provisioning_points_at_the_dashboard_and_prometheus(dashboard: dict) -> None:
    sources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "llmwatch.yml").read_text()
    )
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://127.0.0.1:9090"
    boards = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "llmwatch.yml").read_text())
    (provider,) = boards["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]
    # Panels take the data source from the dashboard's variable, of the provisioned type.
    (variable,) = dashboard["templating"]["list"]
    assert variable["type"] == "datasource" and variable["query"] == source["type"]
