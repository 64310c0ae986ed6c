"""Working without a server: the offline source, the demo's stack file, replayed events,
checks before publishing, and the figures that stay readable on a week of minutes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support.servers import free_port

from detector import workbench as wb
from detector.registry.store import ModelRegistry
from detector.workbench.offline import scenario_frame
from detector.workbench.plot_common import envelope

CONFIG = Path(__file__).resolve().parents[3] / "configs" / "detector.yaml"
NOW = 1_796_000_000.0  # a Monday in 2026, on the minute


@pytest.fixture(scope="module")
def settings():
    return wb.notebook_settings(CONFIG, prometheus_url=f"http://127.0.0.1:{free_port()}")


def test_the_scenario_ends_now_with_its_latest_incident_an_hour_ago() -> None:
    frame, incidents = scenario_frame(NOW, step=60.0)
    assert frame.index[-1] <= pd.Timestamp(NOW, unit="s")
    assert frame.index[-1] >= pd.Timestamp(NOW - 120, unit="s")
    _, end, what = incidents[-1]
    assert pd.Timedelta("55min") <= pd.Timestamp(NOW, unit="s") - end <= pd.Timedelta("65min")
    assert what.startswith("latency x")
    # Named as configured, vLLM's engine signals included; GPU memory with its device label.
    assert {"output_tokens_per_request", 'gpu_memory_used_mb{device="0"}'} <= set(frame.columns)
    assert {"kv_cache_usage_ratio", "queue_time_p95_seconds", "prompt_tokens_per_request"} <= set(
        frame.columns
    )


def test_auto_says_it_works_offline_and_every_signal_has_history(settings, capsys) -> None:
    source, offline = wb.open_source(settings, "auto")
    assert offline is not None and "does not answer" in capsys.readouterr().out
    start, end = wb.resolve_time("now-2d"), wb.resolve_time("now")
    history = wb.pull_history(settings, start, end, source=source)
    summary = wb.history_summary(history)
    assert len(summary) == len(settings.signals) and (summary["points"] > 2000).all()
    assert list(offline.incident_table().columns) == ["start", "end", "what"]


def test_insisting_on_prometheus_names_the_url_and_the_way_out(settings) -> None:
    with pytest.raises(ConnectionError, match=r"127\.0\.0\.1.*SOURCE='scenarios'"):
        wb.open_source(settings, "prometheus")


def test_the_replayed_events_find_the_latest_regression(settings) -> None:
    source, offline = wb.open_source(settings, "scenarios")
    events = wb.replay_events(settings, source, wb.resolve_time("now-6h"), wb.resolve_time("now"))
    assert list(events.columns) == list(wb.EVENT_COLUMNS)
    latency = events[events["signal"].str.startswith("latency")]
    assert len(latency) and (latency["off_by"] > 0).all()
    start = offline.incidents[-1][0]
    assert (latency["start"] >= start.tz_localize("UTC") - pd.Timedelta("5min")).all()
    assert len(wb.incident_summary(wb.group_events(events))) == 1


def test_the_demo_stack_file_is_found_above_and_ignored_once_its_demo_is_gone(tmp_path) -> None:
    (tmp_path / "var" / "demo").mkdir(parents=True)
    stack = {"prometheus_url": "http://127.0.0.1:1", "pid": os.getpid()}
    (tmp_path / wb.DEMO_STACK_FILE).write_text(json.dumps(stack))
    (tmp_path / "notebooks").mkdir()
    assert wb.demo_stack(tmp_path / "notebooks") == stack
    dead = 2**22 + 12345  # above the usual pid_max: no such process
    (tmp_path / wb.DEMO_STACK_FILE).write_text(json.dumps({**stack, "pid": dead}))
    assert wb.demo_stack(tmp_path / "notebooks") == {}
    assert wb.repository_path("configs/detector.yaml", tmp_path).is_file()  # from the checkout


def test_nothing_is_published_to_a_missing_registry_or_one_the_service_does_not_read(tmp_path):
    with pytest.raises(FileNotFoundError, match="REGISTRY_ROOT"):
        wb.check_publish_target(ModelRegistry(tmp_path / "nope"), None)
    (tmp_path / "models").mkdir()
    registry = ModelRegistry(tmp_path / "models")
    assert "no service checked" in wb.check_publish_target(registry, None)
    gone = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionError, match=rf"{gone}.*WAIT_FOR_SERVICE_S = 0"):
        wb.check_publish_target(registry, gone)


def test_a_dense_series_is_drawn_as_its_envelope() -> None:
    when = pd.date_range("2026-01-05", periods=10_080, freq="1min")
    values = np.sin(np.arange(10_080) / 50.0)
    values[7] = 9.0
    t, low, high = envelope(when, values, max_points=1000)
    assert len(t) == len(low) == len(high) <= 1000
    assert high.max() == 9.0 and low.min() == pytest.approx(values.min())
    assert envelope(when[:500], values[:500], max_points=1000) is None


def test_interactive_figures_have_a_panel_per_series() -> None:
    frame = pd.DataFrame(
        {"a": np.arange(10.0), "b": np.ones(10)}, index=pd.date_range("2026-01-05", periods=10)
    )
    fig = wb.interactive_history(frame)
    assert [a.text for a in fig.layout.annotations] == ["a", "b"] and len(fig.data) == 2
