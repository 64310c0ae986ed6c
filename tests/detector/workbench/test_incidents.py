"""Incident review: events from the REST API, grouped into incidents; what moved together."""

from __future__ import annotations

import math

import httpx
import numpy as np
import pandas as pd
import pytest
from support.workbench import ApiServer

from detector.core.point import ScoredPoint
from detector.service.api import create_api
from detector.service.history import EventStore
from detector.workbench import (
    EVENT_COLUMNS,
    deviation_scores,
    fetch_events,
    group_events,
    incident_summary,
    incident_window,
    moved_together,
)

T0 = 1_767_571_200.0  # 2026-01-05T00:00:00Z


@pytest.fixture
def api(tmp_path):
    store = EventStore(tmp_path / "history.sqlite")
    # A latency spike and a traffic drop that overlaps it: one incident; an error burst two
    # hours later, still open: another; and an event a day before the range.
    e = store.open_event(signal="latency", labels={"model": "a"}, point=ScoredPoint(T0, score=0.96))
    peak = ScoredPoint(T0 + 60, actual=3.0, expected=1.0, lower=0.5, upper=1.5, score=0.999)
    store.update_event(e.id, peak, families=["seasonal"], model_version="v1")
    store.close_event(e.id, at=T0 + 300)
    drop = ScoredPoint(T0 + 120, actual=0.2, expected=1.0, lower=0.6, upper=1.4, score=0.97)
    e = store.open_event(signal="rps", labels={}, point=drop, families=["seasonal", "levelshift"])
    store.close_event(e.id, at=T0 + 720)
    e = store.open_event(signal="errors", labels={}, point=ScoredPoint(T0 - 86_400, score=0.99))
    store.close_event(e.id, at=T0 - 86_000)
    store.open_event(
        signal="errors", labels={}, point=ScoredPoint(T0 + 7200, actual=0.1, score=0.99)
    )
    with ApiServer(create_api(None, store, retrain_token=None)) as server:
        yield server
    store.close()


def test_events_are_fetched_page_by_page_with_how_far_off_they_were(api) -> None:
    events = fetch_events(api.url, T0 - 3600, T0 + 3 * 3600, page_size=2)
    assert list(events.columns) == list(EVENT_COLUMNS)
    assert list(events["series"]) == ['latency{model="a"}', "rps", "errors"]
    spike, drop, errors = (events.iloc[i] for i in range(3))
    assert spike["start"] == pd.Timestamp(T0, unit="s", tz="UTC")
    assert spike["duration_min"] == 5.0 and spike["peak_score"] == 0.999
    assert (spike["off_by"], spike["off_by_pct"], spike["off_by_bands"]) == (2.0, 200.0, 4.0)
    assert spike["detectors"] == "seasonal" and spike["model_version"] == "v1"
    # Below the band: negative, in half-widths of the lower side.
    assert drop["off_by_bands"] == pytest.approx(-2.0) and drop["off_by"] == pytest.approx(-0.8)
    assert drop["duration_min"] == 10.0 and not drop["open"]
    assert errors["open"] and pd.isna(errors["end"]) and errors["duration_min"] > 5
    assert math.isnan(errors["off_by"])  # no expected value recorded
    only = fetch_events(api.url, T0 - 3600, T0 + 3 * 3600, signal="rps")
    assert list(only["signal"]) == ["rps"]
    with pytest.raises(httpx.HTTPStatusError, match="after end"):
        fetch_events(api.url, T0, T0 - 60)


def test_overlapping_events_form_one_incident(api) -> None:
    grouped = group_events(fetch_events(api.url, T0 - 3600, T0 + 3 * 3600))
    assert list(grouped["incident"]) == [1, 1, 2]
    summary = incident_summary(grouped)
    assert list(summary.index) == [1, 2]
    first = summary.loc[1]
    assert first["signals"] == "latency, rps" and first["events"] == 2
    assert first["strongest"] == 'latency{model="a"}'
    assert first["end"] == pd.Timestamp(T0 + 720, unit="s", tz="UTC")
    assert pd.isna(summary.loc[2, "end"])  # still open
    assert incident_window(summary, 1) == (T0 - 900, T0 + 720 + 900)
    start, end = incident_window(summary, 2)
    assert start == T0 + 7200 - 900 and end > pd.Timestamp.now().timestamp()  # open: until now
    start, _ = incident_window(summary)  # the one with the most events
    assert start == T0 - 900
    with pytest.raises(ValueError, match="no incidents"):
        incident_window(summary.iloc[:0])
    assert group_events(grouped.iloc[:0]).empty


def _daily_frame(days: int = 6, seed: int = 0) -> pd.DataFrame:
    idx = pd.date_range("2026-01-05", periods=days * 288, freq="5min")
    rng = np.random.default_rng(seed)
    phase = np.arange(idx.size) * 2 * np.pi / 288
    return pd.DataFrame(
        {
            "latency": 2 + np.sin(phase) + 0.05 * rng.normal(size=idx.size),
            "rps": 10 + 5 * np.cos(phase) + 0.2 * rng.normal(size=idx.size),
            "errors": np.zeros(idx.size),
        },
        index=idx,
    )


def test_deviations_single_out_the_series_that_moved() -> None:
    frame = _daily_frame()
    start, end = frame.index[-48], frame.index[-1]
    frame.loc[frame.index[-30] : frame.index[-20], "latency"] += 1.0  # 20 sigma
    z = deviation_scores(frame, start, end, reference_days=3)
    assert z.index[0] == start and z.index[-1] == end
    # The daily cycle is no deviation: the reference is the same time on earlier days.
    assert z["rps"].abs().max() < 5
    moved = moved_together(z)
    assert list(moved.index[moved["moved"]]) == ["latency"]
    assert moved.loc["latency", "peak_z"] > 10
    assert frame.index[-30] <= moved.loc["latency", "peak_at"] <= frame.index[-20]
    assert moved.loc["errors", "peak_z"] == 0.0  # a flat series stays at zero


def test_deviations_accept_aware_times_and_refuse_no_reference() -> None:
    frame = _daily_frame()
    aware = frame.tz_localize("UTC")
    start = float(frame.index[-48].value / 1e9)
    a = deviation_scores(aware, start, start + 3600)
    b = deviation_scores(frame, frame.index[-48], frame.index[-48] + pd.Timedelta(hours=1))
    pd.testing.assert_frame_equal(a, b)
    with pytest.raises(ValueError, match="reference_days"):
        deviation_scores(frame, start, start + 3600, reference_days=0)
    empty = moved_together(pd.DataFrame({"x": [np.nan]}, index=frame.index[:1]))
    assert not empty.loc["x", "moved"]
