"""Tests of the NAB scorer: published results and hand-computed cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from support.requires import NAB_ROOT, need_nab

from detector.evaluation.nab import (
    PROFILES,
    CorpusScore,
    Windows,
    load_corpus,
    load_windows,
    probationary_length,
    score_all_profiles,
    score_corpus,
)


@pytest.fixture
def requires_nab() -> None:
    need_nab()


DETECTORS = ("numenta", "windowedGaussian")
# Published final scores with one threshold per profile optimised over the corpus.
# numenta's low-FP optimum (63.21) beats NAB's stored, non-optimal threshold (63.12).
OPTIMISED = {
    ("numenta", "standard"): 70.10,
    ("numenta", "reward_low_FP_rate"): 63.21,
    ("numenta", "reward_low_FN_rate"): 74.32,
    ("windowedGaussian", "standard"): 39.65,
    ("windowedGaussian", "reward_low_FP_rate"): 20.87,
    ("windowedGaussian", "reward_low_FN_rate"): 47.41,
}
S_MINUS_1 = 2.0 / (1.0 + math.exp(-5.0)) - 1.0  # 0.98661, NAB's maxTP


# --- reference reproduction ---------------------------------------------------------------


@pytest.fixture(scope="module")
def nab_windows() -> dict[str, Windows]:
    return load_windows(NAB_ROOT / "labels" / "combined_windows.json")


@pytest.fixture(scope="module")
def published() -> dict:
    return json.loads((NAB_ROOT / "reference_results" / "published_scores.json").read_text())


@pytest.fixture(scope="module")
def reference_scores(nab_windows, published) -> dict[str, dict[str, dict[str, CorpusScore]]]:
    """Optimised and stored-threshold scores of both reference detectors."""
    out = {}
    for detector in DETECTORS:
        results = {}
        for name in nab_windows:
            category, file = name.split("/")
            path = NAB_ROOT / "reference_results" / detector / category / f"{detector}_{file}.gz"
            frame = pd.read_csv(path, usecols=["timestamp", "anomaly_score"])
            timestamps = pd.to_datetime(frame["timestamp"]).to_numpy(dtype="datetime64[ns]")
            results[name] = (timestamps, frame["anomaly_score"].to_numpy(dtype=float))
        stored = published[detector]["published_thresholds"]
        out[detector] = {
            "optimised": score_all_profiles(results, nab_windows),
            "stored": score_all_profiles(results, nab_windows, stored),
        }
    return out


@pytest.mark.usefixtures("requires_nab")
@pytest.mark.parametrize(("detector", "profile"), list(OPTIMISED))
def test_optimised_threshold_reproduces_published_score(reference_scores, detector, profile):
    result = reference_scores[detector]["optimised"][profile]
    assert result.score == pytest.approx(OPTIMISED[detector, profile], abs=0.01)
    assert result.profile == profile


@pytest.mark.usefixtures("requires_nab")
@pytest.mark.parametrize(("detector", "profile"), list(OPTIMISED))
def test_stored_threshold_reproduces_published_score(
    reference_scores, published, detector, profile
):
    result = reference_scores[detector]["stored"][profile]
    expected = published[detector]["published_final_scores"][profile]
    assert result.score == pytest.approx(expected, abs=1e-6)
    assert result.threshold == published[detector]["published_thresholds"][profile]


@pytest.mark.usefixtures("requires_nab")
def test_numenta_low_fp_at_stored_threshold(reference_scores):
    assert reference_scores["numenta"]["stored"]["reward_low_FP_rate"].score == pytest.approx(
        63.12, abs=0.01
    )


@pytest.mark.usefixtures("requires_nab")
@pytest.mark.parametrize("detector", DETECTORS)
def test_optimised_at_least_as_good_as_stored(reference_scores, detector):
    for profile in PROFILES:
        optimised = reference_scores[detector]["optimised"][profile]
        stored = reference_scores[detector]["stored"][profile]
        assert optimised.score >= stored.score - 1e-9
        assert optimised.tp + optimised.fn == stored.tp + stored.fn == 116


@pytest.mark.usefixtures("requires_nab")
def test_load_corpus_matches_labels(nab_windows):
    corpus = load_corpus(NAB_ROOT)
    assert len(corpus) == 58
    assert set(corpus) == set(nab_windows)
    assert sum(len(frame) for frame in corpus.values()) == 365_558
    assert sum(len(w) for w in nab_windows.values()) == 116
    frame = corpus["realKnownCause/nyc_taxi.csv"]
    assert isinstance(frame.index, pd.DatetimeIndex)
    assert frame.index.name == "timestamp"
    assert frame.index.tz is None
    assert list(frame.columns) == ["value"]
    assert frame.index[0] == pd.Timestamp("2014-07-01 00:00:00")


# --- hand-computed cases ------------------------------------------------------------------

N = 1000  # probationary period: 150 rows
WINDOW = (400, 499)  # width 100


def make_file(n: int, detections: list[int], windows: list[tuple[int, int]]):
    """A file of `n` five-minute rows scoring 1.0 at `detections`, with row-index windows."""
    timestamps = pd.date_range("2020-01-01", periods=n, freq="5min").to_numpy()
    scores = np.zeros(n)
    scores[detections] = 1.0
    limits = [(pd.Timestamp(timestamps[a]), pd.Timestamp(timestamps[b])) for a, b in windows]
    return (timestamps, scores), limits


def score_one(detections, windows=(WINDOW,), profile="standard", n=N) -> CorpusScore:
    result, limits = make_file(n, detections, list(windows))
    return score_corpus({"f.csv": result}, {"f.csv": limits}, profile, threshold=0.5)


def s(y: float) -> float:
    return 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


def test_detection_at_window_start_scores_full_tp():
    # The sigmoid gives 0.9866 at the window start; NAB divides by that maximum,
    # which the published scores require, so the start earns exactly tp.
    result = score_one([400])
    assert s(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert result.raw == pytest.approx(PROFILES["standard"].tp)
    assert (result.tp, result.fp, result.fn) == (1, 0, 0)
    assert result.score == pytest.approx(100.0)


def test_later_detections_in_window_score_less_and_only_first_counts():
    assert score_one([450]).raw == pytest.approx(s(-0.5) / S_MINUS_1)
    assert score_one([499]).raw == pytest.approx(s(-0.01) / S_MINUS_1)
    assert score_one([480, 420, 450]).raw == pytest.approx(s(-0.8) / S_MINUS_1)


def test_detection_in_probationary_period_is_ignored():
    result = score_one([100])
    assert (result.tp, result.fp, result.fn) == (0, 0, 1)
    assert result.raw == pytest.approx(-PROFILES["standard"].fn)
    assert result.score == pytest.approx(0.0)
    assert probationary_length(N) == 150


def test_false_positive_costs():
    fp = PROFILES["standard"].fp
    fn = PROFILES["standard"].fn
    # Far after the window (5 widths) and before any window: the full -fp each.
    assert score_one([999]).raw == pytest.approx(-fn - fp)
    assert score_one([200]).raw == pytest.approx(-fn - fp)
    # Just after the window the cost is almost nothing.
    assert score_one([500]).raw == pytest.approx(-fn + fp * s(1 / 99))
    result = score_one([400, 200, 999], profile="reward_low_FP_rate")
    assert result.raw == pytest.approx(1.0 - 2 * PROFILES["reward_low_FP_rate"].fp)
    assert (result.tp, result.fp, result.fn) == (1, 2, 0)


def test_null_and_perfect_detectors_normalise_to_0_and_100():
    windows_by_file = {"a.csv": [(300, 320), (700, 760)], "b.csv": [(500, 900)]}
    for profile, cost in PROFILES.items():
        null = {}
        perfect = {}
        limits = {}
        for name, windows in windows_by_file.items():
            null[name], limits[name] = make_file(N, [], windows)
            perfect[name], _ = make_file(N, [a for a, _ in windows], windows)
        null_score = score_corpus(null, limits, profile)
        assert null_score.score == pytest.approx(0.0)
        assert null_score.threshold == math.inf
        assert null_score.null == pytest.approx(-3 * cost.fn)
        perfect_score = score_corpus(perfect, limits, profile)
        assert perfect_score.score == pytest.approx(100.0)
        assert perfect_score.threshold == 1.0
        assert perfect_score.perfect == pytest.approx(3 * cost.tp)
        assert (perfect_score.tp, perfect_score.fp, perfect_score.fn) == (3, 0, 0)


def test_window_partly_or_wholly_in_probation():
    # Rows 120..199 straddle the probation boundary (150): row 160 still counts.
    assert score_one([160], windows=[(120, 199)]).raw == pytest.approx(s(-0.5) / S_MINUS_1)
    wholly = score_one([], windows=[(50, 99)])
    assert (wholly.tp, wholly.fn, wholly.null, wholly.perfect) == (0, 0, 0.0, 1.0)


def test_threshold_is_inclusive_and_tz_aware_timestamps_are_utc():
    (ts, scores), limits = make_file(N, [400], [WINDOW])
    assert score_corpus({"f": (ts, scores)}, {"f": limits}, threshold=1.0).tp == 1
    assert score_corpus({"f": (ts, scores)}, {"f": limits}, threshold=1.0 + 1e-9).tp == 0
    aware = pd.DatetimeIndex(ts).tz_localize("UTC").tz_convert("Europe/Berlin")
    assert score_corpus({"f": (aware, scores)}, {"f": limits}, threshold=1.0).tp == 1


def test_mismatched_files_are_named():
    result, limits = make_file(N, [400], [WINDOW])
    with pytest.raises(ValueError, match=r"extra\.csv"):
        score_corpus({"f.csv": result, "extra.csv": result}, {"f.csv": limits})
    with pytest.raises(ValueError, match=r"missing\.csv"):
        score_corpus({"f.csv": result}, {"f.csv": limits, "missing.csv": []})
    with pytest.raises(ValueError, match="unknown profile"):
        score_corpus({"f.csv": result}, {"f.csv": limits}, profile="nope")


def test_probationary_length():
    assert [probationary_length(n) for n in (0, 100, 4999, 5000, 22695)] == [0, 15, 749, 750, 750]


def test_load_windows_parses_naive_timestamps(tmp_path):
    path = tmp_path / "windows.json"
    path.write_text(
        json.dumps({"c/f.csv": [["2014-04-10 07:15:00.000000", "2014-04-11 16:45:00.000000"]]})
    )
    assert load_windows(path) == {
        "c/f.csv": [(pd.Timestamp("2014-04-10 07:15"), pd.Timestamp("2014-04-11 16:45"))]
    }


# --- vectorised sweep against a direct, row-by-row port of NAB's rules --------------------


def brute_force_raw(results, windows, profile: str, threshold: float) -> float:
    cost = PROFILES[profile]
    total = 0.0
    for name, (ts, scores) in results.items():
        limits = sorted(windows[name])
        ts = list(pd.DatetimeIndex(ts))
        spans = [(ts.index(a), ts.index(b)) for a, b in limits]
        start = probationary_length(len(ts))
        for a, b in spans:
            if b < start:
                continue  # not scorable at all, as in NAB
            hits = [i for i in range(max(a, start), b + 1) if scores[i] >= threshold]
            total += cost.tp * s(-(b - hits[0] + 1) / (b - a + 1)) / S_MINUS_1 if hits else -cost.fn
        for i in range(start, len(ts)):
            if scores[i] < threshold or any(a <= i <= b for a, b in spans):
                continue
            before = [(a, b) for a, b in spans if b < i]
            if not before:
                total -= cost.fp
            else:
                a, b = before[-1]
                y = (i - b) / (b - a)
                total += cost.fp * (-1.0 if y > 3 else s(y))
    return total


def test_sweep_matches_brute_force_at_every_threshold():
    rng = np.random.default_rng(7)
    results, windows = {}, {}
    for f in range(3):
        n = int(rng.integers(150, 260))
        cuts = np.sort(rng.choice(np.arange(10, n - 5), size=6, replace=False))
        spans = [(int(a), int(b)) for a, b in zip(cuts[::2], cuts[1::2], strict=True)]
        (ts, _), windows[f"f{f}"] = make_file(n, [], spans)
        results[f"f{f}"] = (ts, rng.integers(0, 15, size=n) / 14)  # many ties
    for profile in PROFILES:
        best = score_corpus(results, windows, profile)
        candidates = [math.inf, *np.unique(np.concatenate([v[1] for v in results.values()]))]
        raws = {t: brute_force_raw(results, windows, profile, t) for t in candidates}
        for t in candidates[1::3]:
            assert score_corpus(results, windows, profile, t).raw == pytest.approx(raws[t])
        assert best.raw == pytest.approx(max(raws.values()))
        assert raws[best.threshold] == pytest.approx(best.raw)
