"""Rendered variants of the stack configs: valid for the real tools and for a running Prometheus."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import pytest
import yaml
from support.stack import AMTOOL, PROMTOOL, REPO, StackPrometheus, http_json, run_tool, wait_for

from demo.render import (
    JOB_NAMES,
    StackAddresses,
    StackConfigFiles,
    render_alertmanager_config,
    render_rule_file,
    write_stack_configs,
)
from demo.yamlio import scale_duration
from llmwatch.cli import main
from llmwatch.durations import parse_duration

pytestmark = pytest.mark.integration

RULES = REPO / "configs" / "rules"


def _rules(text: str) -> list[dict]:
    return [rule for group in yaml.safe_load(text)["groups"] for rule in group["rules"]]


def test_rendered_configs_pass_promtool_and_amtool(rendered: StackConfigFiles) -> None:
    result = run_tool(PROMTOOL, "check", "config", str(rendered.prometheus))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 rule files found" in result.stdout
    result = run_tool(AMTOOL, "check-config", str(rendered.alertmanager))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rendered_prometheus_config_points_at_the_given_addresses(
    rendered: StackConfigFiles, stack_addresses: StackAddresses
) -> None:
    config = yaml.safe_load(rendered.prometheus.read_text())
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]
    }
    for component, job in JOB_NAMES.items():
        assert targets[job] == [getattr(stack_addresses, component)]
    alerting = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alerting == [stack_addresses.alertmanager]
    assert config["global"]["scrape_interval"] == "1s"
    assert config["global"]["evaluation_interval"] == "1s"
    assert config["global"]["scrape_timeout"] == "1s"  # never longer than the interval
    assert config["rule_files"] == [str(p) for p in rendered.rule_files]


def test_time_scale_shortens_every_wait(rendered: StackConfigFiles) -> None:
    for path in rendered.rule_files:
        scaled = {(r.get("alert"), r.get("expr")): r for r in _rules(path.read_text())}
        for rule in _rules((RULES / path.name).read_text()):
            copy = scaled[(rule.get("alert"), rule.get("expr"))]
            for key in ("for", "keep_firing_for"):
                if key in rule:
                    assert copy[key] == scale_duration(rule[key], 0.1)
    route = yaml.safe_load(rendered.alertmanager.read_text())["route"]
    assert parse_duration(route["group_wait"]) == 3
    assert parse_duration(route["routes"][0]["group_wait"]) == 1


def test_scale_one_keeps_rules_as_they_are() -> None:
    for path in sorted(RULES.glob("*.yml")):
        assert yaml.safe_load(render_rule_file(path)) == yaml.safe_load(path.read_text())


def test_runbook_base_makes_links_absolute(tmp_path: Path) -> None:
    text = render_rule_file(RULES / "static.yml", runbook_base="https://example.org/runbook.md")
    urls = {rule["annotations"]["runbook_url"] for rule in _rules(text)}
    assert "https://example.org/runbook.md#highinferencelatency" in urls
    assert all(url.startswith("https://example.org/runbook.md#") for url in urls)


def test_webhook_url_reaches_every_receiver() -> None:
    config = yaml.safe_load(render_alertmanager_config("http://127.0.0.1:1234/hook"))
    urls = [hook["url"] for r in config["receivers"] for hook in r["webhook_configs"]]
    assert urls and set(urls) == {"http://127.0.0.1:1234/hook"}


@pytest.mark.parametrize("scale", [0.0, -1.0])
def test_time_scale_must_be_positive(scale: float) -> None:
    with pytest.raises(ValueError, match="time_scale"):
        render_rule_file(RULES / "static.yml", time_scale=scale)
    with pytest.raises(ValueError, match="time_scale"):
        render_alertmanager_config(time_scale=scale)


@pytest.mark.parametrize("text", ["", "5x", "m5", "1h 30m", "30m1h"])
def test_bad_durations_are_named(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_cli_render_writes_a_loadable_stack(tmp_path: Path) -> None:
    status = main(
        ["stack", "render", str(tmp_path), "--serving", "127.0.0.1:18080", "--time-scale", "0.5"]
    )
    assert status == 0
    assert "127.0.0.1:18080" in (tmp_path / "prometheus.yml").read_text()
    rules = _rules((tmp_path / "rules" / "static.yml").read_text())
    assert {r["for"] for r in rules if r["alert"] == "HighInferenceLatency"} == {"1m", "150s"}
    result = run_tool(PROMTOOL, "check", "config", str(tmp_path / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_running_prometheus_loads_the_rendered_stack(
    stack_prometheus: StackPrometheus, stack_addresses: StackAddresses
) -> None:
    """Every rule group loads, every job targets its address, alerts go to the Alertmanager."""
    groups = http_json(stack_prometheus.url + "/api/v1/rules")["data"]["groups"]
    loaded = {g["name"]: len(g["rules"]) for g in groups}
    expected = {}
    for path in sorted(RULES.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            expected[group["name"]] = len(group["rules"])
    assert loaded == expected
    assert all(rule["health"] != "err" for g in groups for rule in g["rules"])

    # Target and Alertmanager discovery are asynchronous: give them a moment.
    def discovered() -> tuple[dict[str, str], list[str]]:
        active = http_json(stack_prometheus.url + "/api/v1/targets")["data"]["activeTargets"]
        managers = http_json(stack_prometheus.url + "/api/v1/alertmanagers")["data"]
        jobs = {t["labels"]["job"]: t["labels"]["instance"] for t in active}
        return jobs, [a["url"] for a in managers["activeAlertmanagers"]]

    jobs, urls = wait_for(discovered, lambda found: len(found[0]) == len(JOB_NAMES) and found[1])
    assert jobs == {job: getattr(stack_addresses, c) for c, job in JOB_NAMES.items()}
    assert urls == [f"http://{stack_addresses.alertmanager}/api/v2/alerts"]


def test_write_stack_configs_uses_the_given_configs_dir(tmp_path: Path) -> None:
    """Another configs folder (a deployment's own) is rendered instead of the repository's."""
    source = tmp_path / "configs"
    (source / "rules").mkdir(parents=True)
    (source / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "rule_files": ["rules/only.yml"],
                "scrape_configs": [
                    {"job_name": "llm-serving", "static_configs": [{"targets": ["x:1"]}]}
                ],
            }
        )
    )
    (source / "rules" / "only.yml").write_text(
        yaml.safe_dump(
            {"groups": [{"name": "g", "rules": [{"record": "a:b", "expr": "vector(1)"}]}]}
        )
    )
    (source / "alertmanager.yml").write_text((REPO / "configs" / "alertmanager.yml").read_text())
    files = write_stack_configs(tmp_path / "out", StackAddresses(), configs_dir=source)
    assert [p.name for p in files.rule_files] == ["only.yml"]
    config = yaml.safe_load(files.prometheus.read_text())
    assert config["scrape_configs"][0]["static_configs"] == [{"targets": ["127.0.0.1:8080"]}]


def test_with_nothing_up_only_the_down_alerts_fire(stack_prometheus: StackPrometheus) -> None:
    """Live: no serving app and no detector listening. Their down alerts fire (the `for` scaled to
    seconds); no signal exists, so no threshold, ratio or anomaly alert fires."""

    def firing() -> set[str]:
        alerts = http_json(stack_prometheus.url + "/api/v1/alerts")["data"]["alerts"]
        return {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}

    down = {"LLMServingDown", "LLMWatchDetectorDown"}
    assert wait_for(firing, lambda names: down <= names, timeout=60) == down
    query = urllib.parse.urlencode({"query": 'ALERTS{alertstate="firing"}'})
    series = http_json(f"{stack_prometheus.url}/api/v1/query?{query}")["data"]["result"]
    assert {s["metric"]["alertname"] for s in series} == down
