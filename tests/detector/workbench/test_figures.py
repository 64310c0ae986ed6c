"""The notebooks' own figures: profiles, event timelines, deviations, correlations, PNG sets."""

from __future__ import annotations

from pathlib import Path

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
import pytest

from detector.evaluation.scenarios import generate
from detector.service.config import load_settings
from detector.service.source import SeriesBatch
from detector.workbench import (
    Candidate,
    decomposition_figures,
    figure_path,
    fit_models,
    plot_correlation,
    plot_deviations,
    plot_event_timeline,
    plot_weekly_profile,
    readable,
    replay_figures,
    replay_history,
    show,
)

PNG = b"\x89PNG\r\n\x1a\n"
T0 = 1_767_571_200.0  # 2026-01-05T00:00:00Z, a Monday


def _png(path: Path) -> None:
    assert path.read_bytes().startswith(PNG) and path.stat().st_size > 5_000


def test_weekly_profile_is_the_median_per_weekday_and_local_hour(tmp_path) -> None:
    idx = pd.date_range("2026-01-05", periods=14 * 24, freq="h")  # two weeks, UTC
    series = pd.Series(np.arange(idx.size, dtype=float), index=idx, name="rps")
    fig = plot_weekly_profile(series, unit="req/s", tz="Asia/Tokyo", save=tmp_path / "p.png")
    _png(tmp_path / "p.png")
    week, day = fig.axes[0], fig.axes[2]  # the colour bar sits between them
    assert week.get_title() == "rps: weekly profile (median per hour)"
    assert week.get_xlabel() == "hour of day (Asia/Tokyo)"
    grid = week.get_images()[0].get_array()
    assert grid.shape == (7, 24)
    # Monday 09:00 in Tokyo is Monday 00:00 UTC: rows 0 and 168 of the two weeks.
    assert grid[0, 9] == np.median([0.0, 168.0])
    assert day.get_ylabel() == "rps (req/s)"


def _events() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "series": ["latency", "rps", "latency"],
            "start": pd.to_datetime([T0 + 600, T0 + 900, T0 + 3000], unit="s", utc=True),
            "end": pd.to_datetime([T0 + 1200, None, T0 + 3300], unit="s", utc=True),
            "peak_score": [0.99, 0.96, 1.0],
        }
    )


def test_event_timeline_has_a_row_per_series_over_the_range_reviewed(tmp_path) -> None:
    fig = plot_event_timeline(_events(), start=T0, end=T0 + 3600, tz="UTC", save=tmp_path / "t.png")
    _png(tmp_path / "t.png")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["latency", "rps"]
    assert len(ax.patches) == 3
    lo, hi = ax.get_xlim()
    assert mdates.num2date(lo).timestamp() == T0 and mdates.num2date(hi).timestamp() == T0 + 3600
    assert ax.get_xlabel() == "time (UTC)"
    empty = plot_event_timeline(_events().iloc[:0], save=tmp_path / "e.png")
    assert empty.axes[0].texts[0].get_text() == "no events in this range"


def test_deviations_and_correlation_figures(tmp_path) -> None:
    idx = pd.date_range("2026-01-05", periods=120, freq="min")
    rng = np.random.default_rng(0)
    z = pd.DataFrame({"a": rng.normal(size=120), "b": rng.normal(size=120) / 10}, index=idx)
    z.iloc[60:70, 0] = 8.0
    fig = plot_deviations(z, _events(), threshold=4, tz="UTC", save=tmp_path / "d.png")
    _png(tmp_path / "d.png")
    lines = fig.axes[1]
    assert [t.get_text() for t in lines.get_legend().get_texts()] == ["a"]  # only what moved
    assert len(lines.patches) == 3  # the events, shaded
    fig = plot_correlation(z.corr(), save=tmp_path / "c.png")
    _png(tmp_path / "c.png")
    r = f"{z.corr().iloc[0, 1]:.2f}"
    assert sorted(t.get_text() for t in fig.axes[0].texts) == sorted([r, r, "1.00", "1.00"])


def test_figure_sets_are_written_one_png_per_series(tmp_path, capsys) -> None:
    frame = generate("traffic_surge", seed=0, days=5, step_s=300).frame
    names = ["requests_per_second", "latency_p95_seconds"]
    history = {n: SeriesBatch(frame[[n]].set_axis(["{}"], axis=1), {"{}": {}}) for n in names}
    settings = load_settings(
        None, min_train_span="1d", signals=[{"name": n, "query": n} for n in names]
    )
    models = fit_models(history, settings, display_names=True)
    paths = decomposition_figures(readable(history), models, tmp_path / "d", tz="UTC")
    assert [p.name for p in paths] == [
        "decomposition-requests_per_second.png",
        "profile-requests_per_second.png",
        "decomposition-latency_p95_seconds.png",
        "profile-latency_p95_seconds.png",
    ]
    for path in paths:
        _png(path)
    split = frame.index[-288].timestamp()
    replays = replay_history(history, settings, [Candidate("a"), Candidate("b")], split=split)
    paths = replay_figures(replays, "b", tmp_path / "r", tz="UTC")
    assert [p.name for p in paths] == [
        "actual-vs-expected-requests_per_second.png",
        "actual-vs-expected-latency_p95_seconds.png",
    ]
    show(paths[:1])
    assert "Image" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("parts", "name"),
    [(("a", "b"), "a-b.png"), (("x", 'm{gpu="0",model="q"}'), "x-m_gpu_0_model_q_.png")],
)
def test_figure_paths_are_safe_file_names(parts, name) -> None:
    assert figure_path(Path("out"), *parts) == Path("out") / name
