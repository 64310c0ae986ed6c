"""The Prometheus and Alertmanager configs pass the real tools, and every alert is unit-tested.

``promtool check config`` / ``check rules`` / ``test rules`` and ``amtool check-config`` run on
``configs/`` and ``tests/rules/``; on top, every alert (and each of its severities) must have a
firing and a silent case in ``tests/rules/*_test.yml``, a runbook section, and labels the
Alertmanager routes and inhibitions rely on.
"""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from support.stack import AMTOOL, PROMTOOL, REPO, run_tool

from demo.series import known_series, recorded_signals

pytestmark = pytest.mark.integration

CONFIGS = REPO / "configs"
RULE_FILES = sorted((CONFIGS / "rules").glob("*.yml"))
RULE_TESTS = sorted((REPO / "tests" / "rules").glob("*_test.yml"))
RECORDING = CONFIGS / "rules" / "recording.yml"
RUNBOOK = REPO / "docs" / "runbook.md"


def _rules(kind: str) -> list[dict[str, Any]]:
    out = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            out += [rule for rule in group["rules"] if kind in rule]
    return out


def _metric_names(expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def _github_anchors(markdown: str) -> set[str]:
    """Anchors GitHub gives the headings of a Markdown file (duplicates get -1, -2...)."""
    seen: dict[str, int] = defaultdict(int)
    anchors = set()
    for line in markdown.splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
        anchors.add(slug if seen[slug] == 0 else f"{slug}-{seen[slug]}")
        seen[slug] += 1
    return anchors


def test_promtool_check_config() -> None:
    result = run_tool(PROMTOOL, "check", "config", str(CONFIGS / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stdout + result.stderr


def test_promtool_check_rules() -> None:
    result = run_tool(PROMTOOL, "check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_FILES)


def _group_orders(test_file: Path) -> list[tuple[str, ...]]:
    spec = yaml.safe_load(test_file.read_text())
    groups = [
        group["name"]
        for rule_file in spec["rule_files"]
        for group in yaml.safe_load((test_file.parent / rule_file).read_text())["groups"]
    ]
    return list(itertools.permutations(groups))


@pytest.mark.parametrize(
    ("test_file", "order"),
    [(path, order) for path in RULE_TESTS for order in _group_orders(path)],
    ids=lambda value: value.stem if isinstance(value, Path) else "-".join(value),
)
def test_promtool_test_rules(test_file: Path, order: tuple[str, ...], tmp_path: Path) -> None:
    """Every rule test passes whichever group Prometheus evaluates first.

    Prometheus runs rule groups independently, so an alert may see a recorded series one
    evaluation late; promtool picks a random order unless told, which made a test that only
    held in one order fail now and then.
    """
    spec = yaml.safe_load(test_file.read_text())
    spec["rule_files"] = [str((test_file.parent / f).resolve()) for f in spec["rule_files"]]
    spec["group_eval_order"] = list(order)
    ordered = tmp_path / test_file.name
    ordered.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = run_tool(PROMTOOL, "test", "rules", str(ordered))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_amtool_check_config() -> None:
    result = run_tool(AMTOOL, "check-config", str(CONFIGS / "alertmanager.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rule_tests_load_every_rule_file() -> None:
    loaded = set()
    for path in RULE_TESTS:
        loaded |= {
            (path.parent / f).resolve() for f in yaml.safe_load(path.read_text())["rule_files"]
        }
    assert loaded == {p.resolve() for p in RULE_FILES}


def test_every_alert_fires_and_stays_silent_in_some_unit_test() -> None:
    fired: set[tuple[str, str]] = set()
    silent: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                expected = check.get("exp_alerts") or []
                if not expected:
                    silent.add(check["alertname"])
                fired |= {(check["alertname"], a["exp_labels"]["severity"]) for a in expected}
    alerts = {(rule["alert"], rule["labels"]["severity"]) for rule in _rules("alert")}
    assert alerts - fired == set(), "alert levels never seen firing in tests/rules"
    assert {name for name, _ in alerts} - silent == set(), "alerts never checked silent"


def test_every_alert_has_a_runbook_section() -> None:
    anchors = _github_anchors(RUNBOOK.read_text())
    for rule in _rules("alert"):
        url = rule["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        assert path == "docs/runbook.md", f"{rule['alert']}: {url}"
        assert anchor == rule["alert"].lower(), f"{rule['alert']}: anchor {anchor!r}"
        assert anchor in anchors, f"{rule['alert']}: no section #{anchor} in docs/runbook.md"


def test_alert_labels_support_routing_and_inhibition() -> None:
    signals = set(recorded_signals(RECORDING))
    for rule in _rules("alert"):
        labels = rule["labels"]
        assert labels["severity"] in {"critical", "warning"}, rule["alert"]
        assert labels["kind"] in {"threshold", "anomaly", "health"}, rule["alert"]
        for key in ("summary", "description", "runbook_url"):
            assert rule["annotations"].get(key), f"{rule['alert']}: no {key}"
        if labels["kind"] == "threshold":
            # Inhibition of the anomaly alerts matches on this label.
            assert labels["signal"] in signals, rule["alert"]
        if labels["kind"] == "anomaly":
            assert "anomalies_url" in rule["annotations"], rule["alert"]


@pytest.mark.parametrize("kind", ["record", "alert"])
def test_rule_expressions_use_only_series_the_stack_produces(kind: str) -> None:
    known = known_series(RECORDING)
    for rule in _rules(kind):
        unknown = _metric_names(rule["expr"]) - known
        assert not unknown, f"{rule[kind]}: {rule['expr']!r} reads unknown series {unknown}"


def test_detector_config_reads_the_recording_rules() -> None:
    """configs/detector.yaml's default signals are the recorded ones, under the same names."""
    config = yaml.safe_load((CONFIGS / "detector.yaml").read_text())
    signals = {s["name"]: s["query"] for s in config["signals"]}
    recorded = recorded_signals(RECORDING)
    assert sorted(signals) == sorted(recorded)
    for name, query in signals.items():
        assert _metric_names(query) == {f"llmwatch:{name}"}, name


def test_runbook_anchor_rules() -> None:
    anchors = _github_anchors("## HighInferenceLatency\n### Meaning\n## B\n### Meaning\n")
    assert anchors == {"highinferencelatency", "meaning", "b", "meaning-1"}


def test_an_unknown_series_is_reported() -> None:
    assert _metric_names('rate(qwen_request_total{status="x"}[1m]) + llmwatch:foo') == {
        "qwen_request_total",
        "llmwatch:foo",
    }
    assert "qwen_request_total" not in known_series(RECORDING)


def test_promtool_test_rules_fails_on_a_wrong_expectation(tmp_path: Path) -> None:
    """The unit tests can fail: a copy expecting an alert that does not fire is reported."""
    case = {
        "rule_files": [
            str(CONFIGS / "rules" / "recording.yml"),
            str(CONFIGS / "rules" / "static.yml"),
        ],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": [],
                "alert_rule_test": [
                    {
                        "eval_time": "5m",
                        "alertname": "HighInferenceLatency",
                        "exp_alerts": [{"exp_labels": {"severity": "critical"}}],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "wrong_test.yml"
    path.write_text(yaml.safe_dump(case))
    result = run_tool(PROMTOOL, "test", "rules", str(path))
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr
