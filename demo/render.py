"""Variants of the stack's configuration files for other addresses and shorter waiting times.

The files in ``configs/`` are the readable defaults (every component on its usual loopback port).
The demo and the tests pick ports at run time and want alerts within seconds, so they write a
rendered copy: same rules and routes, other targets, every ``for``/``keep_firing_for`` and every
Alertmanager wait multiplied by ``time_scale``.

>>> text = render_prometheus_config(StackAddresses(serving="127.0.0.1:18080"), scrape_interval="1s")
>>> "- 127.0.0.1:18080" in text, "scrape_interval: 1s" in text
(True, True)
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from demo.yamlio import dump_yaml, load_yaml, scale_duration
from llmwatch.durations import parse_duration

__all__ = [
    "DEFAULT_ADDRESSES",
    "JOB_NAMES",
    "ROOT_ENV",
    "RUNBOOK_PATH",
    "StackAddresses",
    "StackConfigFiles",
    "default_configs_dir",
    "project_root",
    "render_alertmanager_config",
    "render_prometheus_config",
    "render_rule_file",
    "write_stack_configs",
]

RUNBOOK_PATH = "docs/runbook.md"
# Where the checkout is when the demo does not run from it (tests, an installed copy).
ROOT_ENV = "LLMWATCH_ROOT"
# Scrape job of each component in configs/prometheus.yml (the alert rules match on these).
JOB_NAMES: Mapping[str, str] = {
    "serving": "llm-serving",
    "detector": "llmwatch-detector",
    "prometheus": "prometheus",
    "alertmanager": "alertmanager",
}
_RULE_DURATIONS = ("for", "keep_firing_for")
_ROUTE_DURATIONS = ("group_wait", "group_interval", "repeat_interval")


@dataclass(frozen=True, kw_only=True)
class StackAddresses:
    """Where each component listens (``host:port``) and where Alertmanager posts alerts."""

    serving: str = "127.0.0.1:8080"
    detector: str = "127.0.0.1:9105"
    prometheus: str = "127.0.0.1:9090"
    alertmanager: str = "127.0.0.1:9093"
    webhook_url: str = "http://127.0.0.1:5001/alerts"


DEFAULT_ADDRESSES = StackAddresses()


@dataclass(frozen=True, kw_only=True)
class StackConfigFiles:
    """The files :func:`write_stack_configs` wrote."""

    prometheus: Path
    alertmanager: Path
    rule_files: tuple[Path, ...] = field(default_factory=tuple)


def project_root() -> Path:
    """The llmwatch checkout the demo runs from: ``$LLMWATCH_ROOT``, else the current folder.

    The demo reads the checkout's ``configs/`` and ``docs/``; it does not guess where they are
    from its own location, so an installed copy works as well as the repository's.
    """
    root = Path(os.environ.get(ROOT_ENV) or Path.cwd()).resolve()
    if not (root / "configs" / "prometheus.yml").is_file():
        raise FileNotFoundError(
            f"{root} has no configs/prometheus.yml: run from the llmwatch checkout "
            f"or set {ROOT_ENV} to it"
        )
    return root


def default_configs_dir() -> Path:
    """The ``configs/`` folder of :func:`project_root`."""
    return project_root() / "configs"


def _header(source: Path) -> str:
    return f"Rendered from {source} by demo.render; edit that file, not this one."


def render_prometheus_config(
    addresses: StackAddresses = DEFAULT_ADDRESSES,
    *,
    rule_files: Sequence[Path] | None = None,
    scrape_interval: str | None = None,
    evaluation_interval: str | None = None,
    configs_dir: Path | None = None,
) -> str:
    """``configs/prometheus.yml`` with the given targets, rule files and intervals.

    Parameters
    ----------
    addresses
        Targets of the scrape jobs named in :data:`JOB_NAMES` and the Alertmanager to notify.
    rule_files
        Rule files to load (absolute paths are safest); by default the repository's own.
    scrape_interval, evaluation_interval
        Overrides of the global intervals, e.g. ``"1s"``; the scrape timeout shrinks to fit.
    configs_dir
        Folder holding the default ``prometheus.yml``.
    """
    source = (configs_dir or default_configs_dir()) / "prometheus.yml"
    config = load_yaml(source)
    glob = config.setdefault("global", {})
    if scrape_interval is not None:
        glob["scrape_interval"] = scrape_interval
        timeout = glob.get("scrape_timeout")
        interval_s = parse_duration(scrape_interval)
        if timeout is None or parse_duration(timeout) > interval_s:
            glob["scrape_timeout"] = scrape_interval
    if evaluation_interval is not None:
        glob["evaluation_interval"] = evaluation_interval
    if rule_files is None:
        rule_files = [(source.parent / name).resolve() for name in config.get("rule_files", [])]
    config["rule_files"] = [str(path) for path in rule_files]
    config["alerting"] = {
        "alertmanagers": [{"static_configs": [{"targets": [addresses.alertmanager]}]}]
    }
    targets = {job: getattr(addresses, component) for component, job in JOB_NAMES.items()}
    for job in config.get("scrape_configs", []):
        if job["job_name"] in targets:
            job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    return dump_yaml(config, header=_header(source))


def _render_rule(rule: dict[str, Any], time_scale: float, runbook_base: str | None) -> None:
    for key in _RULE_DURATIONS:
        if key in rule:
            rule[key] = scale_duration(rule[key], time_scale)
    url = rule.get("annotations", {}).get("runbook_url")
    if runbook_base is not None and url and url.startswith(RUNBOOK_PATH):
        rule["annotations"]["runbook_url"] = runbook_base + url[len(RUNBOOK_PATH) :]


def render_rule_file(
    path: Path, *, time_scale: float = 1.0, runbook_base: str | None = None
) -> str:
    """A rule file with its ``for``/``keep_firing_for`` durations scaled.

    Parameters
    ----------
    path
        The rule file (``configs/rules/*.yml``).
    time_scale
        Factor on every waiting time; 0.1 turns ``for: 5m`` into ``for: 30s``. Durations above
        zero stay at least one second.
    runbook_base
        Replaces the ``docs/runbook.md`` prefix of every ``runbook_url``, e.g. with a
        ``file://`` path or the URL the repository is browsed at.
    """
    if time_scale <= 0:
        raise ValueError(f"time_scale must be positive, got {time_scale}")
    rules = load_yaml(path)
    for group in rules.get("groups", []):
        for rule in group.get("rules", []):
            _render_rule(rule, time_scale, runbook_base)
    return dump_yaml(rules, header=_header(path))


def _scale_route(route: dict[str, Any], time_scale: float) -> None:
    for key in _ROUTE_DURATIONS:
        if key in route:
            route[key] = scale_duration(route[key], time_scale)
    for child in route.get("routes", []):
        _scale_route(child, time_scale)


def render_alertmanager_config(
    webhook_url: str = DEFAULT_ADDRESSES.webhook_url,
    *,
    time_scale: float = 1.0,
    configs_dir: Path | None = None,
) -> str:
    """``configs/alertmanager.yml`` posting to ``webhook_url``, its waits scaled by ``time_scale``.

    ``group_wait``, ``group_interval`` and ``repeat_interval`` of every route are multiplied, so
    a test sees a notification (and its resolution) within seconds.
    """
    if time_scale <= 0:
        raise ValueError(f"time_scale must be positive, got {time_scale}")
    source = (configs_dir or default_configs_dir()) / "alertmanager.yml"
    config = load_yaml(source)
    _scale_route(config["route"], time_scale)
    for receiver in config.get("receivers", []):
        # Copies: the default file shares one webhook list between receivers through an anchor.
        hooks = copy.deepcopy(receiver.get("webhook_configs", []))
        for hook in hooks:
            hook["url"] = webhook_url
        if hooks:
            receiver["webhook_configs"] = hooks
    return dump_yaml(config, header=_header(source))


def write_stack_configs(
    out_dir: Path,
    addresses: StackAddresses = DEFAULT_ADDRESSES,
    *,
    scrape_interval: str | None = None,
    evaluation_interval: str | None = None,
    time_scale: float = 1.0,
    runbook_base: str | None = None,
    configs_dir: Path | None = None,
) -> StackConfigFiles:
    """Write ``prometheus.yml``, ``rules/*.yml`` and ``alertmanager.yml`` into ``out_dir``.

    The rendered ``prometheus.yml`` loads the rendered rule files by absolute path, so
    ``prometheus --config.file=OUT/prometheus.yml`` works from any folder. Arguments as in
    :func:`render_prometheus_config`, :func:`render_rule_file` and
    :func:`render_alertmanager_config`; ``evaluation_interval`` defaults to ``scrape_interval``.
    """
    configs_dir = configs_dir or default_configs_dir()
    rules_out = Path(out_dir) / "rules"
    rules_out.mkdir(parents=True, exist_ok=True)
    default = load_yaml(configs_dir / "prometheus.yml")
    written = []
    for name in default.get("rule_files", []):
        source = configs_dir / name
        target = (rules_out / source.name).resolve()
        text = render_rule_file(source, time_scale=time_scale, runbook_base=runbook_base)
        target.write_text(text, encoding="utf-8")
        written.append(target)
    prometheus = Path(out_dir) / "prometheus.yml"
    prometheus.write_text(
        render_prometheus_config(
            addresses,
            rule_files=written,
            scrape_interval=scrape_interval,
            evaluation_interval=evaluation_interval or scrape_interval,
            configs_dir=configs_dir,
        ),
        encoding="utf-8",
    )
    alertmanager = Path(out_dir) / "alertmanager.yml"
    alertmanager.write_text(
        render_alertmanager_config(
            addresses.webhook_url, time_scale=time_scale, configs_dir=configs_dir
        ),
        encoding="utf-8",
    )
    return StackConfigFiles(
        prometheus=prometheus, alertmanager=alertmanager, rule_files=tuple(written)
    )
