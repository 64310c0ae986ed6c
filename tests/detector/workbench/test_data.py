"""Pulling history for the notebooks: times, settings, Prometheus into pandas, fitted models."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from support.workbench import CONFIG, demo_history

from detector.service.config import ConfigError
from detector.service.source import SourceError
from detector.workbench import (
    fit_models,
    history_summary,
    notebook_settings,
    pull_history,
    readable,
    resolve_time,
    signal_table,
    unit_of,
)

pytestmark = pytest.mark.integration

NOW = 1_767_571_200.0  # 2026-01-05T00:00:00Z


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("now-7d", NOW - 7 * 86_400),
        ("now - 90m", NOW - 5_400),
        ("NOW+1h", NOW + 3_600),
        ("2026-01-05T01:00:00Z", NOW + 3_600),
        ("2026-01-05T02:00:00+01:00", NOW + 3_600),
        ("2026-01-05 01:00", NOW + 3_600),  # naive: UTC
        ("1767571200", NOW),
        (1_767_571_200, NOW),
        (datetime(2026, 1, 5, 1, tzinfo=UTC), NOW + 3_600),
    ],
)
def test_resolve_time_reads_relative_iso_and_unix_times(text, expected) -> None:
    assert resolve_time(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "now-7x", "now-", "2026-13-45"])
def test_resolve_time_names_what_it_cannot_read(text) -> None:
    with pytest.raises(ValueError, match=r"time|duration"):
        resolve_time(text, now=NOW)


def test_notebook_settings_override_the_url_and_registry_of_the_config(tmp_path: Path) -> None:
    settings = notebook_settings(
        CONFIG, prometheus_url="http://127.0.0.1:9999/", registry_root=tmp_path
    )
    assert settings.prometheus.url == "http://127.0.0.1:9999"
    assert settings.registry_root == tmp_path
    assert notebook_settings(CONFIG).prometheus.url == "http://127.0.0.1:9090"
    table = signal_table(settings)
    assert table.loc["latency_p95_seconds", "direction"] == "up"
    assert table.loc["latency_p95_seconds", "unit"] == "s"
    assert list(table.index) == [s.name for s in settings.signals]
    bad = tmp_path / "bad.yaml"
    bad.write_text("prometheus: {url: http://x:1, timout: 3}\n")
    with pytest.raises(ConfigError, match=r"prometheus\.timout: unknown key"):
        notebook_settings(bad)


def test_units_follow_the_recording_rule_names() -> None:
    assert [
        unit_of(n)
        for n in (
            "latency_p95_seconds",
            "requests_per_second",
            "error_ratio",
            "gpu_memory_used_mb",
            "output_tokens_per_request",
            "custom",
        )
    ] == ["s", "req/s", "fraction", "MB", "per request", ""]


def test_a_week_from_prometheus_into_pandas_and_models_for_figures(prometheus_factory) -> None:
    end = float(np.floor(time.time() / 60) * 60) - 60
    prom = prometheus_factory(backfill=demo_history(end, days=3))
    settings = notebook_settings(CONFIG, prometheus_url=prom.url)
    history = pull_history(
        settings, end - 3 * 86_400, end, signals=["latency_p95_seconds", "gpu_memory_used_mb"]
    )
    assert list(history) == ["latency_p95_seconds", "gpu_memory_used_mb"]
    gpu = history["gpu_memory_used_mb"]
    assert list(gpu.frame.columns) == ['{device="0"}']
    assert gpu.labels == {'{device="0"}': {"device": "0"}}

    summary = history_summary(history)
    assert list(summary.index) == ["latency_p95_seconds", 'gpu_memory_used_mb{device="0"}']
    assert (summary["points"] > 0.95 * 3 * 1440).all() and (summary["missing"] < 0.05).all()
    assert (summary["min"] <= summary["median"]).all()

    frame = readable(history)
    assert list(frame.columns) == list(summary.index)
    models = fit_models(history, settings, display_names=True)
    assert models["gpu_memory_used_mb"].columns == ['gpu_memory_used_mb{device="0"}']
    # For publishing, columns stay the series keys the service scores.
    assert fit_models(history, settings)["gpu_memory_used_mb"].columns == ['{device="0"}']

    # A day is less than min_train_span (2 days): nothing to fit, and no error.
    short = pull_history(settings, end - 86_400, end, signals=["error_ratio"])
    assert fit_models(short, settings) == {}

    with pytest.raises(ValueError, match="empty"):
        pull_history(settings, end, end - 60)
    with pytest.raises(KeyError, match="nope"):
        pull_history(settings, end - 60, end, signals=["nope"])


def test_an_unreachable_prometheus_is_a_source_error() -> None:
    settings = notebook_settings(CONFIG, prometheus_url="http://127.0.0.1:9")
    with pytest.raises(SourceError, match="unreachable"):
        pull_history(settings, NOW - 3600, NOW, signals=["error_ratio"])
