"""Tests of the isolation-forest detector on frames of standardised residuals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from detector.core.families.iforest import JOINT, IsolationForestDetector

STEP = pd.Timedelta("30s")


def frame_after(index: pd.DatetimeIndex, rows: np.ndarray, columns=("a", "b")) -> pd.DataFrame:
    idx = pd.date_range(index[-1] + STEP, periods=len(rows), freq=STEP)
    return pd.DataFrame(np.asarray(rows, dtype=float), index=idx, columns=list(columns))


@pytest.fixture(scope="module")
def correlated() -> pd.DataFrame:
    """Two signals whose residuals move together (traffic and tokens per second, say)."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=2000)
    b = a + 0.1 * rng.normal(size=2000)
    idx = pd.date_range("2026-01-05", periods=2000, freq=STEP)
    return pd.DataFrame({"a": a, "b": b}, index=idx)


@pytest.fixture(scope="module")
def fitted(correlated: pd.DataFrame) -> IsolationForestDetector:
    return IsolationForestDetector(random_state=0).fit(correlated)


def quiet_rows(n: int) -> np.ndarray:
    return np.zeros((n, 2))


def test_output_is_one_joint_column(fitted: IsolationForestDetector, correlated) -> None:
    assert list(fitted.train_scores_.columns) == [JOINT]
    assert fitted.train_scores_.index.equals(correlated.index)
    assert np.isfinite(fitted.train_scores_.to_numpy()).all()
    assert (fitted.train_scores_.to_numpy() >= 0).all()  # the contract: non-negative
    parts = ("z", "mean", "jump")
    own = [f"{s}:{p}" for s in ("a", "b") for p in parts]
    assert fitted.feature_names_ == own + [f"{s}:cross:{p}" for s in ("a", "b") for p in parts]


def test_anomalies_score_higher(fitted: IsolationForestDetector, correlated) -> None:
    rows = quiet_rows(20)
    rows[10] = [8.0, 8.0]
    scores = fitted.score(frame_after(correlated.index, rows))[JOINT]
    train = fitted.train_scores_[JOINT]
    assert scores.iloc[10] > train.quantile(0.99)
    assert scores.iloc[10] > train.max()
    # An ordinary row (everything at its expected value) is less anomalous than most.
    assert scores.iloc[5] < train.median()
    assert scores.iloc[10] > scores.iloc[5]


def test_decoupling_beyond_the_usual_range_is_found(fitted, correlated) -> None:
    rows = quiet_rows(20)
    rows[10] = [6.0, -6.0]
    scores = fitted.score(frame_after(correlated.index, rows))[JOINT]
    assert scores.iloc[10] > fitted.train_scores_[JOINT].quantile(0.99)


def test_joint_anomaly_no_single_signal_shows(fitted, correlated) -> None:
    # Axis-parallel trees over per-signal features alone score (2, -2) like (2, 2); the cross
    # residuals (each signal against what the others predict) make the decoupling visible.
    train = fitted.train_scores_[JOINT]
    # Each value alone is well inside its signal's training range ...
    assert np.abs(correlated["a"]).quantile(0.99) > 2.0
    rows = quiet_rows(20)
    rows[10] = [2.0, -2.0]  # ... but b is 40 of its residual sigmas away from a.
    decoupled = fitted.score(frame_after(correlated.index, rows))[JOINT].iloc[10]
    rows[10] = [2.0, 2.0]
    coupled = fitted.score(frame_after(correlated.index, rows))[JOINT].iloc[10]
    assert decoupled > train.quantile(0.99)
    assert decoupled > coupled


def test_direction_clips_residuals_against_it(correlated: pd.DataFrame) -> None:
    det = IsolationForestDetector(directions="up", random_state=0).fit(correlated)
    rows = quiet_rows(20)
    zero = det.score(frame_after(correlated.index, rows))[JOINT]
    rows[10] = [-8.0, -8.0]  # a drop, which this configuration does not alert on
    drop = det.score(frame_after(correlated.index, rows))[JOINT]
    np.testing.assert_array_equal(drop.to_numpy(), zero.to_numpy())
    rows[10] = [8.0, 8.0]
    rise = det.score(frame_after(correlated.index, rows))[JOINT]
    assert rise.iloc[10] > det.train_scores_[JOINT].quantile(0.99)


def test_direction_mapping(correlated: pd.DataFrame) -> None:
    det = IsolationForestDetector(directions={"a": "down", "b": "down"}).fit(correlated)
    rows = quiet_rows(20)
    base = det.score(frame_after(correlated.index, rows))[JOINT]
    rows[10] = [8.0, 8.0]
    up = det.score(frame_after(correlated.index, rows))[JOINT]
    np.testing.assert_array_equal(up.to_numpy(), base.to_numpy())


def test_missing_values_give_finite_scores(fitted, correlated) -> None:
    rows = np.random.default_rng(1).normal(size=(30, 2))
    rows[5:10, 0] = np.nan
    rows[12, :] = np.nan
    scores = fitted.score(frame_after(correlated.index, rows))[JOINT]
    assert np.isfinite(scores.to_numpy()).all()
    assert (scores >= 0).all()


def test_empty_frame(fitted, correlated) -> None:
    out = fitted.score(frame_after(correlated.index, np.zeros((0, 2))))
    assert list(out.columns) == [JOINT]
    assert len(out) == 0


def test_same_seed_same_scores_other_seed_differs(correlated: pd.DataFrame) -> None:
    train = correlated.iloc[:500]
    one = IsolationForestDetector(random_state=3).fit(train).train_scores_
    two = IsolationForestDetector(random_state=3).fit(train).train_scores_
    other = IsolationForestDetector(random_state=4).fit(train).train_scores_
    pd.testing.assert_frame_equal(one, two)
    assert not np.allclose(one.to_numpy(), other.to_numpy())


def test_max_train_subsamples(correlated: pd.DataFrame) -> None:
    det = IsolationForestDetector(max_train=50, max_samples=256, n_estimators=20).fit(correlated)
    assert det.forest_.max_samples <= 50
    assert len(det.train_scores_) == len(correlated)  # every row is still scored
    rows = quiet_rows(5)
    rows[2] = [9.0, 9.0]
    scores = det.score(frame_after(correlated.index, rows))[JOINT]
    assert scores.iloc[2] > det.train_scores_[JOINT].quantile(0.99)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("n_estimators", 0),
        ("max_samples", 1),
        ("window", 1),
        ("max_train", 5),
        ("directions", "diagonal"),
        ("directions", {"a": "sideways"}),
    ],
)
def test_invalid_parameters_raise_at_fit(name: str, value, correlated: pd.DataFrame) -> None:
    det = IsolationForestDetector(**{name: value})
    with pytest.raises(ValueError, match=name):
        det.fit(correlated.iloc[:100])


def test_get_params_round_trip(correlated: pd.DataFrame) -> None:
    det = IsolationForestDetector(n_estimators=10, window=4, random_state=7)
    params = det.get_params()
    assert params["n_estimators"] == 10 and params["random_state"] == 7
    assert IsolationForestDetector(**params).get_params() == params
    det.fit(correlated.iloc[:200])
    assert det.get_params() == params
    assert "n_estimators=10" in repr(det)


# -- contributions ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def independent() -> tuple[IsolationForestDetector, pd.DataFrame]:
    """Three unrelated signals: nine features (each signal's residual, mean, jump)."""
    rng = np.random.default_rng(2)
    idx = pd.date_range("2026-01-05", periods=2000, freq=STEP)
    z = pd.DataFrame(rng.normal(size=(2000, 3)), index=idx, columns=["a", "b", "c"])
    return IsolationForestDetector(random_state=0).fit(z), z


@pytest.fixture(scope="module")
def coupled_regimes() -> tuple[IsolationForestDetector, pd.DataFrame]:
    """Signals a and b switch between levels 0 and 5 together; c is unrelated noise.

    Each of a and b alone is at 0 half the time and at 5 the other half; only the combination
    a at 0 while b is at 5 never occurs.
    """
    rng = np.random.default_rng(0)
    n = 2000
    idx = pd.date_range("2026-01-05", periods=n, freq=STEP)
    level = ((np.arange(n) // 500 + 1) % 2) * 5.0  # ends at 0, where the test rows start
    z = pd.DataFrame(
        {
            "a": level + 0.5 * rng.normal(size=n),
            "b": level + 0.5 * rng.normal(size=n),
            "c": rng.normal(size=n),
        },
        index=idx,
    )
    return IsolationForestDetector(n_estimators=200, random_state=0).fit(z), z


def _ranks_each_first(credit: pd.DataFrame) -> bool:
    """Row ``f`` (a row unusual in feature ``f`` only) credits ``f`` most, for every ``f``."""
    return bool((credit.idxmax(axis=1) == credit.index).all())


def _credits_both(credit: pd.Series) -> bool:
    """a and b's level features lead (their own or cross ones, not a jump), each signal has a
    quarter of the credit, c none."""
    positive = credit.clip(lower=0.0)
    share = positive.groupby(lambda f: f.split(":")[0]).sum() / positive.sum()
    top = credit.nlargest(4).index
    return (
        all(f.split(":")[0] in ("a", "b") and not f.endswith("jump") for f in top)
        and share["a"] > 0.25
        and share["b"] > 0.25
        and share["c"] < 0.05
    )


def _one_feature_unusual(det: IsolationForestDetector, z: pd.DataFrame) -> pd.DataFrame:
    """One feature row per feature: every feature at its training median but that one far out."""
    train = det.features(z, det.initial_state_)
    median, low, high = train.median(), train.quantile(0.01), train.quantile(0.99)
    rows = pd.DataFrame([median] * len(det.feature_names_), index=det.feature_names_)
    for name in det.feature_names_:
        rows.loc[name, name] = high[name] + 2 * (high[name] - low[name])
    return rows


def test_features_are_what_the_forest_scores(fitted, correlated) -> None:
    rows = np.random.default_rng(5).normal(size=(30, 2))
    frame = frame_after(correlated.index, rows)
    feats = fitted.features(frame)
    assert list(feats.columns) == fitted.feature_names_
    raw = -fitted.forest_.score_samples(feats.to_numpy())
    np.testing.assert_allclose(raw, fitted.score(frame)[JOINT].to_numpy())


def test_contributions_add_up_to_the_score(fitted, correlated) -> None:
    rows = np.random.default_rng(6).normal(size=(50, 2)) * 3
    rows[7] = [8.0, -8.0]
    frame = frame_after(correlated.index, rows)
    credit = fitted.contributions(fitted.features(frame))
    assert list(credit.columns) == fitted.feature_names_ and credit.index.equals(frame.index)
    # The decomposition is exact: a row's credits sum to 1 + log2(score), 0 for an average row.
    exact = 1.0 + np.log2(fitted.score(frame)[JOINT].to_numpy())
    np.testing.assert_allclose(credit.sum(axis=1).to_numpy(), exact, atol=1e-9)
    # Deterministic: the same rows give the same credit.
    pd.testing.assert_frame_equal(credit, fitted.contributions(fitted.features(frame)))


def test_the_one_unusual_feature_ranks_first(independent) -> None:
    det, z = independent
    credit = det.contributions(_one_feature_unusual(det, z))
    assert _ranks_each_first(credit), credit.idxmax(axis=1).to_dict()
    # Unusual rows are anomalous, and all the credit that makes them so is the one feature's.
    assert (np.diag(credit.to_numpy()) > 0).all()
    assert (credit.to_numpy()[~np.eye(len(credit), dtype=bool)] < 0).all()


def test_a_spike_in_one_signal_is_credited_to_that_signal(independent) -> None:
    det, z = independent
    rows = np.zeros((20, 3))
    rows[10, 1] = 7.0
    credit = det.contributions(det.features(frame_after(z.index, rows, ("a", "b", "c")))).iloc[10]
    b = [f for f in credit.index if f.startswith("b:")]  # its own and its cross features
    assert set(credit.nlargest(2).index) <= set(b)
    positive = credit.clip(lower=0.0)
    assert positive[b].sum() > 0.9 * positive.sum()


def test_a_joint_anomaly_is_credited_to_both_signals(coupled_regimes) -> None:
    det, z = coupled_regimes
    rows = np.zeros((20, 3))
    rows[10:, 1] = 5.0  # b moves to its other level, a stays: a combination never seen
    frame = frame_after(z.index, rows, columns=("a", "b", "c"))
    scores = det.score(frame)[JOINT]
    # Each value alone is ordinary: a sits at 0 and b at 5 half of the training time.
    assert (np.abs(z["a"]) < 1).mean() > 0.4 and (np.abs(z["b"] - 5) < 1).mean() > 0.4
    # Together they are unusual (less so than a real outlier: trees split one feature at a time,
    # see test_joint_anomaly_no_single_signal_shows), and more so than the coupled rows before.
    assert scores.iloc[19] > det.train_scores_[JOINT].median() + 0.02
    assert scores.iloc[19] > scores.iloc[5] + 0.05
    credit = det.contributions(det.features(frame)).iloc[19]
    assert _credits_both(credit), credit.round(3).to_dict()


def test_permuted_attributions_fail_the_checks(independent, coupled_regimes) -> None:
    # The checks above are not satisfied by any arrangement of credit: moving every feature's
    # credit to another feature (a cyclic shift of the columns) fails each of them.
    single = independent[0].contributions(_one_feature_unusual(*independent))
    det, train = coupled_regimes
    rows = np.zeros((20, 3))
    rows[10:, 1] = 5.0
    frame = frame_after(train.index, rows, columns=("a", "b", "c"))
    joint = det.contributions(det.features(frame)).iloc[19]
    assert _ranks_each_first(single) and _credits_both(joint)
    for shift in range(1, len(joint)):
        moved = pd.DataFrame(
            np.roll(single.to_numpy(), shift, axis=1), index=single.index, columns=single.columns
        )
        assert not _ranks_each_first(moved)
        if shift == len(joint) // 2:
            continue  # moves each signal's cross features onto its own: the same signals
        assert not _credits_both(pd.Series(np.roll(joint.to_numpy(), shift), index=joint.index))


def test_contributions_of_no_rows(fitted, correlated) -> None:
    credit = fitted.contributions(fitted.features(frame_after(correlated.index, np.zeros((0, 2)))))
    assert credit.shape == (0, len(fitted.feature_names_))
