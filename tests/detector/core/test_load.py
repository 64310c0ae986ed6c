"""Load-aware expectations: the load factor, and what the ensemble makes of load it explains."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from detector.core.ensemble import Ensemble
from detector.core.load import (
    MAX_FACTOR,
    LoadAdjustment,
    LoadModel,
    auto_explained_by,
    check_explained_by,
)

STEP = "60s"
CAPACITY = 40.0


def traffic(n: int, rng: np.random.Generator) -> np.ndarray:
    """Requests per second over days: quiet nights, busy afternoons, a wander in between."""
    hour = (np.arange(n) / 60.0) % 24.0
    office = 1.0 / ((1.0 + np.exp(8.0 - hour)) * (1.0 + np.exp(hour - 19.0)))
    return (0.5 + 14.0 * office) * np.exp(0.1 * rng.standard_normal(n).cumsum() / np.sqrt(n))


def server(rate: np.ndarray, rng: np.random.Generator, slow: np.ndarray | None = None):
    """P99 latency of a server that queues: it grows with the square of the load."""
    load = rate / CAPACITY
    p99 = 2.0 * (1.0 + 2.0 * load**2) * np.exp(0.04 * rng.standard_normal(rate.size))
    return p99 if slow is None else p99 * slow


@pytest.fixture(scope="module")
def fitted() -> tuple[Ensemble, pd.DataFrame]:
    rng = np.random.default_rng(0)
    n = 8 * 1440
    idx = pd.date_range("2026-01-05", periods=n, freq=STEP)
    rate = traffic(n, rng)
    frame = pd.DataFrame(
        {"latency_p99_seconds": server(rate, rng), "requests_per_second": rate}, index=idx
    )
    directions = {"latency_p99_seconds": "up", "requests_per_second": "both"}
    return Ensemble(directions=directions).fit(frame.iloc[: 7 * 1440]), frame


def afternoon(frame: pd.DataFrame) -> pd.DataFrame:
    """Day 8, 13:00-15:00: rows the model has not seen, at the busy time of day."""
    day = frame.iloc[7 * 1440 :]
    return day.between_time("13:00", "15:00").copy()


def test_the_factor_rises_with_load_and_is_one_at_the_typical_load() -> None:
    rng = np.random.default_rng(1)
    rate = rng.uniform(0.5, 16.0, 5000)
    model = LoadModel().fit(server(rate, rng)[:, None], rate[:, None], np.ones((1, 1), bool))
    grid = np.array([[np.median(rate)], [12.0], [16.0], [48.0]])
    f = model.factor(grid)[:, 0]
    assert f[0] == pytest.approx(1.0)
    assert np.all(np.diff(f) > 0)
    # Three times the busiest training load: the queueing curve is followed beyond the data.
    truth = (1 + 2 * (48 / CAPACITY) ** 2) / (1 + 2 * (np.median(rate) / CAPACITY) ** 2)
    assert f[3] > 0.8 * truth
    assert model.explains.tolist() == [True]


def test_a_latency_that_ignores_load_gets_no_factor() -> None:
    rng = np.random.default_rng(2)
    rate = rng.uniform(0.5, 16.0, 5000)
    latency = 2.0 * np.exp(0.04 * rng.standard_normal(5000))
    model = LoadModel().fit(latency[:, None], rate[:, None], np.ones((1, 1), bool))
    assert np.allclose(model.factor(np.array([[1.0], [16.0], [100.0]])), 1.0, atol=0.02)


def test_absurd_load_is_capped() -> None:
    rng = np.random.default_rng(3)
    rate = rng.uniform(0.5, 16.0, 5000)
    model = LoadModel().fit(server(rate, rng)[:, None], rate[:, None], np.ones((1, 1), bool))
    f = model.factor(np.array([[1e300], [np.inf], [np.nan], [-5.0]]))[:, 0]
    assert np.all(np.isfinite(f)) and f.max() <= MAX_FACTOR
    assert f[2] == pytest.approx(1.0)  # a missing load counts as typical


def test_covariates_come_from_the_frame_or_beside_it() -> None:
    rng = np.random.default_rng(4)
    idx = pd.date_range("2026-01-05", periods=3000, freq=STEP)
    rate = rng.uniform(0.5, 16.0, 3000)
    both = pd.DataFrame({"p99": server(rate, rng), "rps": rate}, index=idx)
    inside = LoadAdjustment().fit(both, None, {"p99": ("rps",)}, np.zeros(2, bool))
    beside = LoadAdjustment().fit(both[["p99"]], both[["rps"]], {"*": ("rps",)}, np.zeros(1, bool))
    np.testing.assert_allclose(
        inside.effects(both, None).factor[:, 0],
        beside.effects(both[["p99"]], both[["rps"]]).factor[:, 0],
    )
    assert inside.explained(["p99", "rps"]) == {"p99": ("rps",)}
    # Excluded columns (ratios of counts) and absent covariates give no load model.
    none = LoadAdjustment().fit(both, None, {"p99": ("rps",)}, np.array([True, False]))
    assert none.effects(both, None) is None and none.explained(["p99", "rps"]) == {}


def test_auto_picks_exogenous_load_only() -> None:
    names = ["latency_p95_seconds", "ttft_p95_seconds", "requests_per_second"]
    names += ["output_tokens_per_request", "requests_running", "requests_waiting", "error_ratio"]
    load = ("requests_per_second", "output_tokens_per_request")
    assert auto_explained_by(names) == {"latency_p95_seconds": load, "ttft_p95_seconds": load}
    assert auto_explained_by(["latency_p95_seconds", "requests_running"]) == {}


@pytest.mark.parametrize("bad", ["time", {"p99": "rps"}, {"p99": ("p99",)}, {"p99": (1,)}, ["rps"]])
def test_invalid_explained_by_is_refused(bad) -> None:
    with pytest.raises(ValueError, match="explained_by"):
        check_explained_by(bad)


def test_a_surge_the_load_explains_does_not_page_as_latency(fitted) -> None:
    model, frame = fitted
    rows = afternoon(frame)
    rng = np.random.default_rng(5)
    rows["requests_per_second"] *= 2.5
    rows["latency_p99_seconds"] = server(rows["requests_per_second"].to_numpy(), rng)
    out = model.score(rows)
    assert out.signal_anomalous["requests_per_second"].any()  # the surge itself pages
    assert not out.signal_anomalous["latency_p99_seconds"].any()
    # The expectation followed the load: it is well above the time-of-day one.
    assert (out.load_factor["latency_p99_seconds"] > 1.3).all()
    assert out.explained_by == {"latency_p99_seconds": ("requests_per_second",)}


def test_a_regression_at_the_same_load_pages(fitted) -> None:
    model, frame = fitted
    rows = afternoon(frame)
    rows.iloc[30:, 0] *= 1.3
    out = model.score(rows)
    flagged = np.flatnonzero(out.signal_anomalous["latency_p99_seconds"].to_numpy())
    assert flagged.size and flagged[0] <= 33
    assert not out.signal_anomalous["latency_p99_seconds"].iloc[:30].any()


def test_latency_up_while_load_drops_pages(fitted) -> None:
    model, frame = fitted
    rows = afternoon(frame)
    # Load halves; latency stays where the busy afternoon had it: too slow for this load.
    rows.iloc[30:, 1] *= 0.5
    out = model.score(rows)
    assert out.signal_anomalous["latency_p99_seconds"].iloc[30:].any()
    assert (out.expected["latency_p99_seconds"].iloc[40:] < rows.iloc[40:, 0]).all()


@pytest.fixture(scope="module")
def cache() -> tuple[Ensemble, pd.DataFrame]:
    """A KV cache whose use is what the requests in flight hold, idle (0) on quiet nights."""
    rng = np.random.default_rng(6)
    n = 8 * 1440
    idx = pd.date_range("2026-01-05", periods=n, freq=STEP)
    running = rng.poisson(traffic(n, rng) * 1.2).astype(float)
    kv = np.clip(0.009 * running * np.exp(0.05 * rng.standard_normal(n)), 0, 1)
    frame = pd.DataFrame({"kv_cache_usage_ratio": kv, "requests_running": running}, index=idx)
    directions = {"kv_cache_usage_ratio": "up", "requests_running": "both"}
    return Ensemble(directions=directions).fit(frame.iloc[: 7 * 1440]), frame


def test_a_cache_follows_the_requests_in_flight_by_a_shift(cache) -> None:
    model, frame = cache
    assert model.explained_signals() == {"kv_cache_usage_ratio": ("requests_running",)}
    rows = afternoon(frame)
    rows["requests_running"] *= 2.0  # twice the requests in flight hold twice the cache
    rows["kv_cache_usage_ratio"] = np.clip(0.009 * rows["requests_running"], 0, 1)
    assert not model.score(rows).signal_anomalous["kv_cache_usage_ratio"].any()
    leak = afternoon(frame)
    leak.iloc[30:, 0] += 0.05  # blocks held by no running request
    out = model.score(leak).signal_anomalous["kv_cache_usage_ratio"]
    assert out.iloc[30:].any() and not out.iloc[:30].any()
