"""Tests of the on-demand isolation-forest contributions of a scored batch."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from detector.core.attribution import top_contributions
from detector.core.ensemble import Ensemble

STEP = pd.Timedelta("60s")


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    idx = pd.date_range("2026-01-05", periods=3000, freq=STEP)
    return pd.DataFrame(1 + 0.05 * rng.normal(size=(3000, 3)), index=idx, columns=["a", "b", "c"])


@pytest.fixture(scope="module")
def ensemble(frame: pd.DataFrame) -> Ensemble:
    return Ensemble(families=("seasonal", "iforest"), seasonality="none").fit(frame.iloc[:2500])


def test_top_contributions_keeps_the_largest_positive_ones() -> None:
    credit = pd.Series({"a:z": 0.1, "b:z": 0.4, "c:z": -0.6, "a:jump": 0.1, "b:jump": 0.0})
    assert top_contributions(credit, 5) == {"b:z": 0.4, "a:z": 0.1, "a:jump": 0.1}
    assert top_contributions(credit, 2) == {"b:z": 0.4, "a:z": 0.1}  # ties keep feature order
    assert top_contributions(credit, 0) == {}


def test_a_row_is_explained_as_the_forest_scored_it(ensemble, frame) -> None:
    model = copy.deepcopy(ensemble)
    batch = frame.iloc[2500:2520].copy()
    batch.iloc[12, 1] += 1.0  # twenty sigmas up on b
    forest = model.members_["iforest"]
    before = copy.deepcopy(forest.state_)
    result = model.update(batch)
    attribution = result.attribution
    assert attribution is not None and attribution.family == "iforest"
    top = attribution.at(12)
    assert 0 < len(top) <= 5 and next(iter(top)).startswith("b:")
    # The same as explaining the residuals from the state the forest scored them from.
    replayed = copy.deepcopy(ensemble).baseline_.decompose(batch).z  # from the state before
    credit = forest.contributions(forest.features(replayed, before)).iloc[12]
    assert top == top_contributions(credit)
    assert attribution.at(12) == top  # asked again: the same answer
    # Scoring is untouched: the same updates without attribution give the same scores.
    plain = copy.deepcopy(ensemble).update(batch)
    pd.testing.assert_frame_equal(plain.family_scores, result.family_scores)


def test_no_forest_no_contributions(frame) -> None:
    model = Ensemble(families=("seasonal",), seasonality="none").fit(frame.iloc[:2500])
    assert model.update(frame.iloc[2500:2510]).attribution is None


def test_a_score_without_advancing_explains_too(ensemble, frame) -> None:
    model = copy.deepcopy(ensemble)
    batch = frame.iloc[2500:2520].copy()
    batch.iloc[12, 1] += 1.0
    scored = model.score(batch).attribution
    updated = model.update(batch).attribution
    assert scored is not None and updated is not None and scored.at(12) == updated.at(12)
