"""Candidate settings: applied like config changes, compared on scenarios and replayed history."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from detector.core.timeutil import seconds
from detector.evaluation.runner import evaluate_corpus
from detector.evaluation.scenarios import SIGNAL_DIRECTIONS, generate
from detector.service.config import SignalSettings, load_settings
from detector.service.source import SeriesBatch
from detector.workbench import (
    EVALUATION_COLUMNS,
    HISTORY_COLUMNS,
    Candidate,
    best_candidate,
    candidates_from,
    evaluate_scenarios,
    evaluation_table,
    history_table,
    replay_history,
    scenario_corpus,
    score_samples,
)

SIGNAL = SignalSettings(name="rps", query="x", direction="up")


def test_a_candidate_changes_the_signal_settings_it_names_and_keeps_the_rest() -> None:
    c = Candidate("c", {"thresholds": {"enter": 0.99}, "detectors": ["seasonal", "levelshift"]})
    out = c.apply(SIGNAL)
    assert out.thresholds.enter == 0.99 and out.thresholds.leave == SIGNAL.thresholds.leave
    assert out.detectors == ("seasonal", "levelshift")
    assert (out.name, out.query, out.direction) == ("rps", "x", "up")
    assert Candidate("same").apply(SIGNAL) == SIGNAL
    params = c.scenario_params()
    assert "directions" not in params and params["families"] == ("seasonal", "levelshift")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"band": 4}, r"candidate 'bad': unknown keys \['band'\]"),
        ({"thresholds": {"enter": 2.0}}, "candidate 'bad'.*enter"),
        ({"detectors": ["levelshift"]}, "candidate 'bad'.*must include 'seasonal'"),
        ({"direction": "sideways"}, "candidate 'bad'.*direction"),
    ],
)
def test_a_bad_candidate_fails_at_once_naming_itself(overrides, message) -> None:
    with pytest.raises(ValueError, match=message):
        candidates_from({"good": {}, "bad": overrides})


def test_no_candidates_is_an_error() -> None:
    with pytest.raises(ValueError, match="no candidates"):
        candidates_from({})


def test_the_scenario_table_is_the_eval_total_of_each_candidate() -> None:
    corpus = scenario_corpus(["error_burst"], days=5.5, step_s=300)
    assert list(corpus.frames) == ["error_burst"]
    assert corpus.frames["error_burst"].shape[1] == len(SIGNAL_DIRECTIONS)
    candidates = candidates_from(
        {"as configured": {}, "seasonal only": {"detectors": ["seasonal"]}}
    )
    reports = evaluate_scenarios(candidates.values(), corpus, jobs=1)
    table = evaluation_table(reports)
    assert list(table.columns) == list(EVALUATION_COLUMNS)
    assert list(table.index) == ["as configured", "seasonal only"]
    # The defaults give exactly what `llmwatch eval` computes on the same corpus.
    direct = evaluate_corpus(corpus, jobs=1)
    row = table.loc["as configured"]
    assert row["f1"] == direct.total.f1 and row["false_alarms"] == direct.total.false_alarms
    assert row["nab_standard"] == direct.nab["standard"].score
    assert row["windows"] == len(corpus.windows["error_burst"])
    assert not table.loc["as configured"].equals(table.loc["seasonal only"])


def test_best_candidate_prefers_f1_then_fewer_false_alarms_then_order() -> None:
    table = pd.DataFrame(
        {"f1": [0.8, 0.9, 0.9, 0.9], "fa_per_day": [0.0, 2.0, 1.0, 1.0]},
        index=["a", "b", "c", "d"],
    )
    assert best_candidate(table) == "c"
    with pytest.raises(ValueError, match="empty"):
        best_candidate(table.iloc[:0])


def _history(days: float = 6.0, step: float = 300.0) -> tuple[dict, object, pd.Timestamp]:
    scenario = generate("error_burst", seed=0, days=days, step_s=step)
    names = ["error_ratio", "requests_per_second"]
    history = {
        n: SeriesBatch(scenario.frame[[n]].rename(columns={n: "{}"}), {"{}": {}}) for n in names
    }
    settings = load_settings(
        None,
        min_train_span="1d",
        signals=[{"name": n, "query": n, "direction": SIGNAL_DIRECTIONS[n]} for n in names],
    )
    return history, settings, scenario.windows[0][0]


def test_replaying_history_counts_the_alerts_each_candidate_would_raise() -> None:
    history, settings, incident = _history()
    split = float(seconds(pd.DatetimeIndex([incident - pd.Timedelta(hours=12)]))[0])
    candidates = candidates_from({"default": {}, "deaf": {"thresholds": {"enter": 1.0}}})
    replays = replay_history(history, settings, candidates.values(), split=split)
    assert [(r.candidate, r.signal) for r in replays] == [
        ("default", "error_ratio"),
        ("deaf", "error_ratio"),
        ("default", "requests_per_second"),
        ("deaf", "requests_per_second"),
    ]
    first = replays[0]
    assert first.model.training_end < split <= seconds(first.scores.actual.index)[0]
    table = history_table(replays)
    assert list(table.columns) == list(HISTORY_COLUMNS)
    assert (
        list(table.index.get_level_values(1)) == ["error_ratio", "requests_per_second", "ALL"] * 2
    )
    default, deaf = table.loc["default"], table.loc["deaf"]
    assert default.loc["error_ratio", "alerts"] >= 1  # the error burst after the split
    assert deaf.loc["ALL", "alerts"] <= default.loc["ALL", "alerts"]
    assert (
        default.loc["ALL", "alerts"]
        == default.loc[["error_ratio", "requests_per_second"]]["alerts"].sum()
    )
    days = default.loc["ALL", "days"]
    assert math.isclose(default.loc["ALL", "alerts_per_day"], default.loc["ALL", "alerts"] / days)
    assert 0 <= default.loc["error_ratio", "share_above_enter"] <= 1
    samples = score_samples(replays)
    assert set(samples) == {"default", "deaf"}
    assert samples["default"].size == default.loc["ALL", "points"]
    assert np.all((samples["default"] >= 0) & (samples["default"] <= 1))


def test_signals_without_history_before_the_split_are_skipped() -> None:
    history, settings, _ = _history()
    first = history["error_ratio"].frame.index[0]
    split = float(seconds(pd.DatetimeIndex([first + pd.Timedelta(hours=6)]))[0])
    assert replay_history(history, settings, [Candidate("c")], split=split) == []
