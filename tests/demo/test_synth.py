"""Seeded history: on the detector's grid, at the measured level now, the traffic's daily shape."""

from __future__ import annotations

import numpy as np
import pytest

from demo.calibrate import SeriesLevel
from demo.synth import _SAFETY, history_series, noise_floor, utc_hour
from serving.workload import daily_rate_factor

DAY = 86_400.0
END = 20_833 * DAY + 4 * 3600  # 04:00 UTC: the quietest hour of the load generator's day
STEP = 10.0


def one(level: SeriesLevel, days: float = 3.0, seed: int = 0) -> np.ndarray:
    series = history_series([level], end=END, days=days, step=STEP, seed=seed)
    return series[0].values


def test_series_sit_on_the_detectors_grid_and_carry_the_live_labels() -> None:
    level = SeriesLevel("gpu_memory_used_mb", {"device": "0"}, 9000.0, 50.0, 30)
    recorded, copy = history_series([level], end=END + 3.0, days=2.5, step=STEP)
    assert recorded.name == "llmwatch:gpu_memory_used_mb"
    assert recorded.labels == {"device": "0"}
    assert copy.name == "llmwatch:signal_value"
    assert copy.labels == {"device": "0", "signal": "gpu_memory_used_mb"}
    np.testing.assert_array_equal(copy.values, recorded.values)
    t = recorded.timestamps
    assert np.all(t % STEP == 0) and np.all(np.diff(t) == STEP)
    assert t[-1] == END and t[0] >= END + 3.0 - 2.5 * DAY


def test_the_request_rate_follows_the_load_generators_day_and_meets_the_live_rate() -> None:
    values = one(SeriesLevel("requests_per_second", {}, 5.0, 0.3, 30))
    t = END - STEP * np.arange(values.size)[::-1]
    hour = utc_hour(t)
    now = values[-360:].mean()  # the last hour
    peak = values[(hour >= 15.5) & (hour < 16.5)].mean()
    assert now == pytest.approx(5.0, rel=0.05)
    ratio = daily_rate_factor(16.0) / daily_rate_factor(4.0)
    assert peak / now == pytest.approx(ratio, rel=0.05)


def test_latency_follows_the_load_a_little_and_ratios_not_at_all() -> None:
    latency = one(SeriesLevel("latency_p95_seconds", {}, 2.0, 0.05, 30))
    hour = utc_hour(END - STEP * np.arange(latency.size)[::-1])
    busy = latency[(hour >= 15.5) & (hour < 16.5)].mean()
    assert busy == pytest.approx(2.0 * (1 + 0.15 * 0.8), rel=0.03)
    ratio = one(SeriesLevel("error_ratio", {}, 0.02, 0.005, 30))
    assert ratio[(hour >= 15.5) & (hour < 16.5)].mean() == pytest.approx(0.02, rel=0.1)


def test_noise_has_the_measured_spread_with_margin_and_the_rule_windows_memory() -> None:
    level = SeriesLevel("output_tokens_per_request", {}, 100.0, 4.0, 30)
    values = one(level)
    resid = values - 100.0
    assert resid.std() == pytest.approx(_SAFETY * 4.0, rel=0.05)
    # A 1m window sampled every 10 s: neighbours share five of six parts.
    lag1 = np.corrcoef(resid[:-1], resid[1:])[0, 1]
    assert lag1 == pytest.approx(5 / 6, abs=0.03)
    # A spread measured too small is raised to the floor of its kind.
    quiet = one(SeriesLevel("output_tokens_per_request", {}, 100.0, 0.0, 30)) - 100.0
    assert quiet.std() == pytest.approx(
        _SAFETY * noise_floor("output_tokens_per_request", 100.0), rel=0.05
    )


def test_ratios_stay_ratios_and_a_seed_replays() -> None:
    level = SeriesLevel("json_error_ratio", {}, 0.0, 0.0, 30)
    values = one(level)
    assert values.min() == 0.0 and values.max() <= 1.0
    np.testing.assert_array_equal(values, one(level))
    assert not np.array_equal(values, one(level, seed=1))


def test_bad_arguments_are_refused() -> None:
    level = SeriesLevel("error_ratio", {}, 0.0, 0.0, 30)
    with pytest.raises(ValueError, match="positive"):
        history_series([level], end=END, days=0, step=STEP)


def test_statistics_of_few_requests_get_a_wider_floor() -> None:
    # 0.2 requests/s: a 1m window holds 12 requests, so a P95 varies by about a third.
    levels = [
        SeriesLevel("requests_per_second", {}, 0.2, 0.05, 30),
        SeriesLevel("latency_p95_seconds", {}, 10.0, 0.0, 30),
    ]
    series = history_series(levels, end=END, days=3.0, step=STEP)
    latency = series[2].values
    t = series[2].timestamps
    shape = 1 + 0.15 * (np.vectorize(daily_rate_factor)(utc_hour(t)) - daily_rate_factor(4.0))
    spread = (latency - 10.0 * shape).std()
    assert spread == pytest.approx(_SAFETY * 10.0 / np.sqrt(12), rel=0.1)


def test_vllms_batch_and_kv_cache_follow_the_load_with_the_noise_of_an_instant() -> None:
    running = one(SeriesLevel("requests_running", {}, 8.0, 2.0, 30))
    t = END - STEP * np.arange(running.size)[::-1]
    hour = utc_hour(t)
    ratio = daily_rate_factor(16.0) / daily_rate_factor(4.0)
    busy = running[(hour >= 15.5) & (hour < 16.5)].mean()
    assert busy / running[-360:].mean() == pytest.approx(ratio, rel=0.05)
    # Read at the scrape: a point shares nothing with the one a step before.
    quiet = running[(hour >= 3.5) & (hour < 4.5)] - 8.0
    assert abs(np.corrcoef(quiet[:-1], quiet[1:])[0, 1]) < 0.1
    kv = one(SeriesLevel("kv_cache_usage_ratio", {}, 0.9, 0.2, 30))
    assert kv.min() >= 0.0 and kv.max() == 1.0  # a share of the cache's blocks, at most all


def test_an_idle_queue_stays_empty_and_preemptions_are_counts() -> None:
    assert not one(SeriesLevel("requests_waiting", {}, 0.0, 0.0, 30)).any()
    assert not one(SeriesLevel("preemptions_per_second", {}, 0.0, 0.0, 30)).any()
    # A rate over the rule's minute, like the request rate: Poisson.
    assert noise_floor("preemptions_per_second", 0.6) == pytest.approx(0.1)
