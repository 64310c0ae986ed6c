"""Tests of the notebook figures: they render to PNG, with the right panels, data and time zone."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from detector.core.ensemble import Ensemble
from detector.core.families.seasonal import SeasonalBaseline
from detector.core.timeutil import phase_lookup

# The figures are built without pyplot, so no display backend is ever involved.
from detector.workbench.plots import (
    plot_actual_vs_expected,
    plot_decomposition,
    plot_ensemble_scores,
    plot_score_distributions,
)

DAY = 288
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _frame(days: int = 4, seed: int = 0) -> pd.DataFrame:
    n = days * DAY
    idx = pd.date_range("2026-01-05", periods=n, freq="5min")
    rng = np.random.default_rng(seed)
    daily = np.sin(np.arange(n) * 2 * np.pi / DAY)
    return pd.DataFrame(
        {"rps": 20 + 5 * daily + rng.normal(0, 0.5, n), "latency": 1 + 0.05 * rng.normal(size=n)},
        index=idx,
    )


def _check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def _tick_minutes(ax) -> set[int]:
    FigureCanvasAgg(ax.figure).draw()
    return {mdates.num2date(x, tz=UTC).minute for x in ax.get_xticks()}


def test_decomposition_parts_add_up_to_the_signal(tmp_path: Path) -> None:
    frame = _frame()
    model = SeasonalBaseline().fit(frame)
    fig = plot_decomposition(
        frame, model, "rps", unit="req/s", tz="UTC", save=tmp_path / "out" / "rps.png"
    )
    _check_png(tmp_path / "out" / "rps.png")
    obs, prof, res = fig.axes
    assert fig.get_suptitle() == "Seasonal decomposition of rps"
    assert [ax.get_title() for ax in fig.axes] == [
        "rps: observed and trend",
        "rps: daily profile",
        "rps: residual",
    ]
    assert obs.get_ylabel() == "rps (req/s)" and obs.get_xlabel() == "time (UTC)"
    assert prof.get_xlabel() == "time of day (UTC)" and res.get_ylabel() == "residual (req/s)"
    observed, trend = (line.get_ydata() for line in obs.get_lines())
    residual = res.get_lines()[0].get_ydata()
    np.testing.assert_allclose(observed, frame["rps"].to_numpy())
    # observed = trend + seasonal profile + residual, row by row
    t = frame.index.as_unit("ns").asi8 / 1e9
    fitted = model.models_["rps"]
    season = phase_lookup(fitted.profile, fitted.period_s, t)
    np.testing.assert_allclose(trend + season + residual, observed, atol=1e-9)
    # The profile panel is the model's daily profile: amplitude about the injected 5 req/s.
    profile = prof.get_lines()[0].get_ydata()
    assert 4.0 < (profile.max() - profile.min()) / 2 < 6.0
    # Replaying ran on a copy: the model still scores exactly as a freshly fitted one.
    pd.testing.assert_frame_equal(
        model.score(frame.iloc[-10:]), SeasonalBaseline().fit(frame).score(frame.iloc[-10:])
    )


def test_decomposition_without_a_profile_says_why() -> None:
    frame = _frame(days=1)
    model = SeasonalBaseline().fit(frame)
    fig = plot_decomposition(frame, model, "latency", tz="UTC")
    texts = [t.get_text() for t in fig.axes[1].texts]
    assert texts and texts[0].startswith("no seasonal profile: none (")
    with pytest.raises(KeyError, match="not a signal"):
        plot_decomposition(frame, model, "nope")
    with pytest.raises(TypeError, match="no fitted seasonal baseline"):
        plot_decomposition(frame, object(), "rps")


def test_time_axis_is_in_the_requested_zone() -> None:
    frame = _frame()
    model = SeasonalBaseline().fit(frame)
    # India is UTC+05:30: ticks on whole local hours fall on half past in UTC.
    fig = plot_decomposition(frame.iloc[:DAY], model, "rps", tz="Asia/Kolkata", replay=False)
    assert fig.axes[0].get_xlabel() == "time (Asia/Kolkata)"
    assert _tick_minutes(fig.axes[0]) == {30}
    assert _tick_minutes(fig.axes[1]) == {30}  # the profile too
    utc = plot_decomposition(frame.iloc[:DAY], model, "rps", tz="UTC", replay=False)
    assert _tick_minutes(utc.axes[0]) == {0}


def test_actual_vs_expected_marks_the_anomalies(tmp_path: Path) -> None:
    frame = _frame(days=4)
    train, test = frame.iloc[: 3 * DAY], frame.iloc[3 * DAY :].copy()
    test.iloc[100:110, 0] += 15.0
    model = Ensemble(directions="up").fit(train)
    scores = model.score(test)
    path = tmp_path / "rps_expected.png"
    fig = plot_ensemble_scores(scores, "rps", unit="req/s", tz="Europe/Paris", save=path)
    _check_png(path)
    top, bottom = fig.axes
    assert top.get_title() == "rps: actual vs expected" and top.get_ylabel() == "rps (req/s)"
    assert bottom.get_title() == "rps: anomaly score" and bottom.get_xlabel().endswith("Paris)")
    flagged = scores.signal_anomalous["rps"].to_numpy().astype(bool)
    assert flagged[100:110].all() and not flagged[110:115].any()  # the shift, while it lasts
    (markers,) = top.collections[1:]  # band, then the anomaly markers
    np.testing.assert_allclose(markers.get_offsets()[:, 1], test["rps"].to_numpy()[flagged])
    labels = [t.get_text() for t in top.get_legend().get_texts()]
    assert labels[:3] == ["expected band", "expected", "actual"]
    events = int(np.count_nonzero(np.diff(flagged.astype(int), prepend=0) == 1))
    assert labels[3] == f"anomalous ({events} event{'s' if events > 1 else ''})"
    thresholds = [line.get_ydata()[0] for line in bottom.get_lines()[1:]]
    assert thresholds == [0.95]


def test_actual_vs_expected_without_scores_has_one_panel() -> None:
    idx = pd.date_range("2026-01-05", periods=50, freq="min")
    s = pd.Series(np.arange(50.0), index=idx, name="tokens")
    fig = plot_actual_vs_expected(s, s, s - 1, s + 1, tz="UTC")
    assert len(fig.axes) == 1 and fig.axes[0].get_title() == "tokens: actual vs expected"


def test_score_distributions(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    normal = rng.uniform(size=5000) ** 8
    noisy = rng.uniform(size=5000)
    fig = plot_score_distributions(
        {"default": normal, "candidate": np.r_[noisy, np.nan]},
        threshold=0.95,
        save=tmp_path / "scores.png",
    )
    _check_png(tmp_path / "scores.png")
    (ax,) = fig.axes
    assert ax.get_title() == "Anomaly score distributions" and ax.get_yscale() == "log"
    assert ax.get_xlabel() == "anomaly score (0-1)"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    share = np.mean(noisy >= 0.95)
    assert labels[1] == f"candidate (n=5000, {share:.2%} >= 0.95)"
    assert labels[2] == "threshold 0.95"
    frame = pd.DataFrame({"seasonal": normal, "iforest": noisy})
    assert len(plot_score_distributions(frame).axes[0].patches) == 2
