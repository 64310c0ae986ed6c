import json
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from detector.evaluation.scenarios import (
    SCENARIO_NAMES,
    SIGNAL_DIRECTIONS,
    Scenario,
    corpus_files,
    generate,
    write_scenarios,
)

SEEDS = (0, 1, 2)
STEP = pd.Timedelta(seconds=30)
DAY = pd.Timedelta(days=1)


def _mean(values: pd.Series) -> float:
    return float(values.mean())


def _median(values: pd.Series) -> float:
    return float(values.median())


def _effects(
    sc: Scenario, column: str, stat: Callable[[pd.Series], float]
) -> list[tuple[float, float]]:
    """Per window: a statistic over its last two hours and over the same clock time on other days.

    Reference days are clear of every incident and of the same kind (weekday or weekend), so a
    difference is the incident's, not the daily or weekly cycle's; a window without such a day (ten
    days hold one weekend) is left out. Only the last two hours count so that a slow drift is
    compared once it has grown.
    """
    values = sc.frame[column]
    first, last = values.index[0], values.index[-1]
    out = []
    for start, end in sc.windows:
        start = max(start, end - pd.Timedelta(hours=2))
        references = []
        for shift in [d * DAY for d in range(-9, 10) if d]:
            s, e = start + shift, end + shift
            clear = all(e < ws or s > we for ws, we in sc.windows)
            same_kind = (s.day_of_week >= 5) == (start.day_of_week >= 5)
            if first <= s and e <= last and clear and same_kind:
                references.append(stat(values[s:e]))
        if references:
            out.append((stat(values[start:end]), float(np.median(references))))
    return out


@pytest.fixture(scope="module")
def scenarios() -> dict[tuple[str, int], Scenario]:
    return {(name, seed): generate(name, seed=seed) for name in SCENARIO_NAMES for seed in SEEDS}


def test_names_and_directions() -> None:
    assert len(SCENARIO_NAMES) == 13
    assert set(SIGNAL_DIRECTIONS.values()) <= {"up", "down", "both"}
    assert SIGNAL_DIRECTIONS["requests_per_second"] == "both"


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"latency_regression.*quiet_week"):
        generate("latency")


def test_deterministic_for_a_seed(scenarios: dict[tuple[str, int], Scenario]) -> None:
    again = generate("memory_leak", seed=1)
    kept = scenarios["memory_leak", 1]
    pd.testing.assert_frame_equal(again.frame, kept.frame)
    assert again.windows == kept.windows
    assert again.description == kept.description
    other = scenarios["memory_leak", 2]
    assert other.windows != kept.windows


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_shape_columns_and_index(scenarios: dict[tuple[str, int], Scenario], name: str) -> None:
    frame = scenarios[name, 0].frame
    assert list(frame.columns) == list(SIGNAL_DIRECTIONS)
    assert all(dtype == np.float64 for dtype in frame.dtypes)
    assert 0.98 * 28_800 < len(frame) < 28_800
    index = frame.index
    assert isinstance(index, pd.DatetimeIndex) and index.name == "timestamp" and index.tz is None
    assert index[0] == pd.Timestamp("2026-01-05") and index[0].day_of_week == 0
    assert index[-1] == pd.Timestamp("2026-01-05") + 10 * DAY - STEP
    assert index.is_monotonic_increasing and not frame.requests_per_second.isna().any()
    # Only a step without any request leaves a quantile or a ratio without value.
    empty = frame.requests_per_second == 0
    assert (frame[~empty].notna().all(axis=1)).all()


def test_gaps_present(scenarios: dict[tuple[str, int], Scenario]) -> None:
    for seed in SEEDS:
        steps = np.diff(scenarios["quiet_week", seed].frame.index) / STEP
        assert np.all(steps == np.round(steps))
        assert (steps == 2).sum() >= 5  # single missed scrapes
        long = steps[steps > 2]
        assert 1 <= long.size <= 10 and long.max() <= 31  # a handful of 1-15 minute stretches


def test_signals_look_like_an_llm_server(scenarios: dict[tuple[str, int], Scenario]) -> None:
    frame = scenarios["quiet_week", 0].frame
    assert (frame.latency_p99_seconds > frame.latency_p95_seconds).all()
    assert (frame.error_ratio == 0).mean() > 0.3 and frame.error_ratio.mean() < 0.005
    assert frame.json_error_ratio.dropna().between(0, 1).all()
    assert 0.005 < frame.json_error_ratio.mean() < 0.015
    assert frame.gpu_memory_used_mb.std() < 20
    weekday = frame[frame.index.day_of_week < 5]
    by_hour = weekday.requests_per_second.groupby(weekday.index.hour).median()
    # Afternoons of 6 to 16 requests per second, nights under one.
    assert 5 < by_hour[13:17].median() < 18 and by_hour[1:5].median() < 1.2
    weekend = frame[frame.index.day_of_week >= 5]
    weekend_noon = weekend.requests_per_second[weekend.index.hour.isin(range(10, 17))].median()
    assert weekend_noon < 0.7 * by_hour[10:17].median()
    # Queueing: busy hours are slower than quiet ones.
    latency = weekday.latency_p95_seconds.groupby(weekday.index.hour).median()
    assert latency[10:17].median() > latency[1:5].median()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_incidents_after_day_4_and_inside(
    scenarios: dict[tuple[str, int], Scenario], name: str, seed: int
) -> None:
    sc = scenarios[name, seed]
    first, last = sc.frame.index[0], sc.frame.index[-1]
    assert len(sc.windows) == 0 if name == "quiet_week" else 1 <= len(sc.windows) <= 3
    for (start, end), following in zip(sc.windows, [*sc.windows[1:], None], strict=False):
        assert first + 4 * DAY <= start and end <= last
        assert end - start >= pd.Timedelta("5min") - STEP
        longest = "9h" if name in ("slow_drift", "memory_leak") else "2h"
        assert end - start <= pd.Timedelta(longest)
        if following is not None:
            assert end < following[0]
    assert (f"{len(sc.windows)} incident" in sc.description) != (name == "quiet_week")


# scenario -> (signal, statistic, check on (inside, reference))
CHECKS: dict[
    str, list[tuple[str, Callable[[pd.Series], float], Callable[[float, float], bool]]]
] = {
    "latency_regression": [
        ("latency_p95_seconds", _median, lambda i, r: i > 1.3 * r),
        ("latency_p99_seconds", _median, lambda i, r: i > 1.3 * r),
        ("ttft_p95_seconds", _median, lambda i, r: i > 1.3 * r),
        ("requests_per_second", _median, lambda i, r: 0.7 < i / r < 1.4),
    ],
    "memory_leak": [("gpu_memory_used_mb", _median, lambda i, r: i - r > 400)],
    "traffic_surge": [("requests_per_second", _median, lambda i, r: i > 1.7 * r)],
    "traffic_drop": [("requests_per_second", _median, lambda i, r: i < 0.55 * r)],
    "error_burst": [("error_ratio", _mean, lambda i, r: i > 0.02 and i > 5 * r)],
    "json_error_burst": [("json_error_ratio", _mean, lambda i, r: i > 0.04 and i > 3 * r)],
    "generation_loops": [
        ("tokens_per_request", _median, lambda i, r: i > 1.8 * r),
        ("latency_p95_seconds", _median, lambda i, r: i > 1.5 * r),
    ],
    "slow_drift": [("latency_p95_seconds", _median, lambda i, r: i > 1.35 * r)],
    "contextual": [("requests_per_second", _median, lambda i, r: abs(np.log(i / r)) > np.log(2))],
}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", sorted(CHECKS))
def test_incident_changes_its_signal(
    scenarios: dict[tuple[str, int], Scenario], name: str, seed: int
) -> None:
    sc = scenarios[name, seed]
    for column, stat, check in CHECKS[name]:
        effects = _effects(sc, column, stat)
        assert effects
        for inside, reference in effects:
            assert check(inside, reference), (column, inside, reference, sc.description)


def test_memory_drops_back_after_the_leak(scenarios: dict[tuple[str, int], Scenario]) -> None:
    sc = scenarios["memory_leak", 0]
    memory = sc.frame.gpu_memory_used_mb
    for start, end in sc.windows:
        assert memory[end + pd.Timedelta("5min") : end + pd.Timedelta("30min")].max() < 17_850
        assert memory[end - pd.Timedelta("30min") : end].median() - memory[start:end].iloc[0] > 700


def test_short_series(scenarios: dict[tuple[str, int], Scenario]) -> None:
    assert generate("quiet_week", days=2).windows == []
    with pytest.raises(ValueError, match="too short"):
        generate("error_burst", days=3)
    with pytest.raises(ValueError, match="positive"):
        generate("error_burst", step_s=0)


def test_written_csv_round_trips(tmp_path) -> None:
    names = ["error_burst", "quiet_week"]
    labels_path = write_scenarios(tmp_path / "out", seed=1, names=names)
    assert labels_path == tmp_path / "out" / "labels.json"
    labels = json.loads(labels_path.read_text())
    files = corpus_files(names)
    assert sorted(labels) == sorted(f"{stem}.csv" for stem in files)
    for stem, (name, strength, step) in files.items():
        sc = generate(name, seed=1, step_s=step, strength=strength)
        path = tmp_path / "out" / f"{stem}.csv"
        assert path.read_text().splitlines()[0] == ",".join(["timestamp", *SIGNAL_DIRECTIONS])
        back = pd.read_csv(path, index_col="timestamp", parse_dates=True)
        assert back.index.equals(sc.frame.index)
        pd.testing.assert_frame_equal(back, sc.frame, check_index_type=False, check_freq=False)
        windows = [(pd.Timestamp(s), pd.Timestamp(e)) for s, e in labels[f"{stem}.csv"]]
        assert windows == sc.windows
    assert labels["quiet_week_30s.csv"] == []
    assert labels["error_burst_large_60s.csv"][0][0].endswith(".000000")  # NAB's label format


def test_write_rejects_unknown_names_before_writing(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown"):
        write_scenarios(tmp_path / "out", names=["quiet_week", "nope"])
    assert not (tmp_path / "out").exists()


def test_strengths_and_steps() -> None:
    small = generate("latency_regression", strength="small", step_s=60)
    large = generate("latency_regression", strength="large", step_s=60)
    assert small.strength == "small" and large.step_s == 60.0
    assert (np.diff(small.frame.index) >= np.timedelta64(60, "s")).all()
    factors = [float(i.label.split("x")[1]) for i in (*small.incidents, *large.incidents)]
    assert all(1.2 <= f <= 1.35 for f in factors[:3]) and all(1.4 <= f <= 1.6 for f in factors[3:])
    with pytest.raises(ValueError, match="strength"):
        generate("latency_regression", strength="huge")


def test_ramps_become_visible_after_they_start() -> None:
    for name in ("slow_drift", "memory_leak"):
        sc = generate(name, strength="small")
        for inc in sc.incidents:
            assert inc.start < inc.visible < inc.end
    steps = generate("error_burst").incidents
    assert all(inc.visible == inc.start for inc in steps)


def test_nights_hold_well_under_one_request_per_second() -> None:
    for seed in SEEDS:
        frame = generate("quiet_week", seed=seed).frame
        weekday_nights = frame[(frame.index.hour < 4) & (frame.index.day_of_week < 5)]
        assert 0.2 < weekday_nights.requests_per_second.mean() < 1.2
