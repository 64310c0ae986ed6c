"""Candidate detector settings, compared on the labelled scenarios and on recent history.

A :class:`Candidate` is a named set of changes to a signal's configuration (the keys of
:class:`~detector.service.config.SignalSettings`: ``detectors``, ``seasonality``, ``direction``,
``thresholds``), so whatever wins can be written into ``configs/detector.yaml`` and the service's
own refits keep it. Two views of each candidate:

* the **scenarios**: the labelled incidents of :mod:`detector.evaluation.scenarios`, backtested
causally as
  ``llmwatch eval`` does, giving the same figures (precision, recall, F1, false alarms per day,
  detection delay, NAB score); each scenario signal keeps its own alert direction;
* the **recent history**: fitted on the first part of the pulled window and replayed over the
  rest, giving the score distribution and the alerts it would have raised per day.

Examples
--------
>>> from detector.service.config import SignalSettings
>>> strict = Candidate("strict", {"thresholds": {"enter": 0.99}})
>>> strict.apply(SignalSettings(name="rps", query="x")).thresholds.enter
0.99
>>> strict.scenario_params()["enter"]
0.99
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from detector.core.scores import EnsembleScores
from detector.core.timeutil import DAY_S, seconds
from detector.evaluation.backtest import BacktestSettings
from detector.evaluation.events import EventMetrics
from detector.evaluation.runner import Corpus, CorpusReport, evaluate_corpus
from detector.evaluation.scenarios import SCENARIO_NAMES, SIGNAL_DIRECTIONS, generate
from detector.service.config import DetectorSettings, SignalSettings
from detector.service.training import (
    SignalModel,
    fit_signal_model,
    load_covariates,
    trainable_columns,
)
from detector.workbench.data import History

__all__ = [
    "EVALUATION_COLUMNS",
    "HISTORY_COLUMNS",
    "Candidate",
    "Replay",
    "best_candidate",
    "candidate_thresholds",
    "candidates_from",
    "evaluate_scenarios",
    "evaluation_table",
    "history_table",
    "replay_history",
    "scenario_corpus",
    "score_samples",
]

# The columns of `llmwatch eval`'s table, per candidate (delay in minutes, NAB per profile).
EVALUATION_COLUMNS = (
    "windows",
    "detected",
    "false_alarms",
    "precision",
    "recall",
    "f1",
    "delay_min",
    "fa_per_day",
    "nab_standard",
    "nab_low_fp",
    "nab_low_fn",
)
HISTORY_COLUMNS = (
    "series",
    "points",
    "days",
    "alerts",
    "alerts_per_day",
    "share_above_enter",
    "p99_score",
)
_OVERRIDABLE = ("detectors", "seasonality", "direction", "thresholds")
_NAB_NAMES = {
    "standard": "nab_standard",
    "reward_low_FP_rate": "nab_low_fp",
    "reward_low_FN_rate": "nab_low_fn",
}


@dataclass(frozen=True)
class Candidate:
    """A named change to the signals' settings; ``{}`` is the configuration as it is."""

    name: str
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [k for k in self.overrides if k not in _OVERRIDABLE]
        if unknown:
            raise ValueError(
                f"candidate {self.name!r}: unknown keys {unknown}; choose from {list(_OVERRIDABLE)}"
            )
        # Fails here, naming the candidate, rather than half-way through a comparison.
        self.apply(SignalSettings(name="check", query="check"))

    def apply(self, signal: SignalSettings) -> SignalSettings:
        """``signal`` with this candidate's changes (thresholds merged key by key), validated."""
        data = signal.model_dump()
        for key, value in self.overrides.items():
            data[key] = {**data[key], **value} if key == "thresholds" else value
        try:
            return SignalSettings.model_validate(data)
        except ValidationError as exc:
            why = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
            )
            raise ValueError(f"candidate {self.name!r}: {why}") from None

    def scenario_params(self) -> dict[str, Any]:
        """Ensemble parameters for the scenarios: the changes on top of the defaults."""
        params = self.apply(SignalSettings(name="scenario", query="scenario")).ensemble_params()
        params.pop("directions")  # each scenario signal keeps its own direction
        return params


def candidates_from(spec: Mapping[str, Mapping[str, Any]]) -> dict[str, Candidate]:
    """Candidates by name from a ``{name: overrides}`` mapping (the notebook's parameter)."""
    if not spec:
        raise ValueError("no candidates: give at least one, e.g. {'as configured': {}}")
    return {name: Candidate(name, dict(overrides or {})) for name, overrides in spec.items()}


def scenario_corpus(
    names: Sequence[str] | None = None,
    *,
    seed: int = 0,
    days: float = 10.0,
    step_s: float = 30.0,
) -> Corpus:
    """The labelled scenarios (all by default, as ``llmwatch eval``); fewer or shorter are cheaper.

    ``days`` must leave room for incidents after day 4 (see
    :func:`detector.evaluation.scenarios.generate`).
    """
    frames, windows = {}, {}
    for name in SCENARIO_NAMES if names is None else tuple(names):
        scenario = generate(name, seed=seed, days=days, step_s=step_s)
        frames[name], windows[name] = scenario.frame, scenario.windows
    return Corpus("scenarios", frames, windows, {"directions": dict(SIGNAL_DIRECTIONS)})


def evaluate_scenarios(
    candidates: Iterable[Candidate],
    corpus: Corpus,
    *,
    settings: BacktestSettings | None = None,
    jobs: int | None = None,
) -> dict[str, CorpusReport]:
    """Backtest ``corpus`` with each candidate; ``settings`` default to the service's cadence."""
    return {
        c.name: evaluate_corpus(corpus, settings, params=c.scenario_params(), jobs=jobs)
        for c in candidates
    }


def _row(m: EventMetrics) -> dict[str, float]:
    delay = m.median_delay_s / 60.0 if not math.isnan(m.median_delay_s) else math.nan
    return {
        "windows": m.windows,
        "detected": m.detected,
        "false_alarms": m.false_alarms,
        "precision": m.precision,
        "recall": m.recall,
        "f1": m.f1,
        "delay_min": delay,
        "fa_per_day": m.false_alarms_per_day,
    }


def evaluation_table(reports: Mapping[str, CorpusReport]) -> pd.DataFrame:
    """``llmwatch eval``'s TOTAL row for each candidate: columns :data:`EVALUATION_COLUMNS`."""
    rows = {}
    for name, report in reports.items():
        nab = {_NAB_NAMES[p]: score.score for p, score in report.nab.items() if p in _NAB_NAMES}
        rows[name] = {**_row(report.total), **nab}
    table = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=list(EVALUATION_COLUMNS))
    table.index.name = "candidate"
    return table


def best_candidate(table: pd.DataFrame) -> str:
    """The candidate with the best F1, then the fewest false alarms per day, then listed first."""
    if table.empty:
        raise ValueError("the evaluation table is empty")
    order = sorted(
        range(len(table)),
        key=lambda i: (-table["f1"].iloc[i], table["fa_per_day"].iloc[i], i),
    )
    return str(table.index[order[0]])


@dataclass(frozen=True)
class Replay:
    """One candidate on one signal: fitted before the split, scores of the rows after it."""

    candidate: str
    signal: str
    settings: SignalSettings
    model: SignalModel
    scores: EnsembleScores


def replay_history(
    history: History,
    settings: DetectorSettings,
    candidates: Iterable[Candidate],
    *,
    split: float,
) -> list[Replay]:
    """Fit every candidate on each signal's rows before ``split`` and score the rows from it.

    Scoring streams through the held-out rows as the service would (levels follow, decisions keep
    their hysteresis), so the alerts counted are the ones the candidate would have raised.
    Signals without a fittable series before ``split`` or without rows after it are skipped.
    """
    candidates = list(candidates)
    out = []
    for name, batch in history.items():
        frame = batch.frame
        cut = pd.Timestamp(split, unit="s")
        train, test = frame[frame.index < cut], frame[frame.index >= cut]
        columns = trainable_columns(train, settings.min_train_points, settings.min_train_span)
        if not columns or test.shape[0] == 0:
            continue
        # Latencies are fitted and scored at the load of their rows, as the service does.
        loads = {n: history[n].frame for n in settings.load_signals(name) if n in history}
        for candidate in candidates:
            signal = candidate.apply(settings.signal(name))
            covariates = load_covariates(train, loads)
            model = fit_signal_model(train[columns], signal, batch.labels, None, covariates)
            scores = model.ensemble.update(test[columns], None, load_covariates(test, loads))
            out.append(Replay(candidate.name, name, signal, model, scores))
    return out


def _alerts(flags: np.ndarray) -> int:
    return int(np.count_nonzero(np.diff(np.r_[0, flags.astype(np.int8)]) == 1))


def history_table(replays: Iterable[Replay]) -> pd.DataFrame:
    """Per candidate and signal: alerts raised over the held-out rows, per day, score tail.

    An alert is a run of anomalous rows of one series (one page). Columns :data:`HISTORY_COLUMNS`,
    indexed by (candidate, signal); the ``ALL`` row of a candidate sums its signals.
    """
    rows = []
    for r in replays:
        t = seconds(r.scores.actual.index)
        days = max((t[-1] - t[0] + r.model.step) / DAY_S, 1e-9)
        flags = r.scores.signal_anomalous.to_numpy()
        values = r.scores.signal_scores.to_numpy()
        observed = np.isfinite(r.scores.actual.to_numpy())
        alerts = sum(_alerts(flags[:, j]) for j in range(flags.shape[1]))
        rows.append(
            {
                "candidate": r.candidate,
                "signal": r.signal,
                "series": flags.shape[1],
                "points": int(observed.sum()),
                "days": days,
                "alerts": alerts,
                "alerts_per_day": alerts / days,
                "share_above_enter": float(np.mean(values[observed] >= r.settings.thresholds.enter))
                if observed.any()
                else math.nan,
                "p99_score": float(np.quantile(values[observed], 0.99))
                if observed.any()
                else math.nan,
            }
        )
    table = pd.DataFrame(rows, columns=["candidate", "signal", *HISTORY_COLUMNS])
    parts = []
    for name in dict.fromkeys(table["candidate"]):  # candidates in the order given
        group = table[table["candidate"] == name]
        days, alerts, points = group["days"].max(), group["alerts"].sum(), group["points"].sum()
        total = {
            "candidate": name,
            "signal": "ALL",
            "series": group["series"].sum(),
            "points": points,
            "days": days,
            "alerts": alerts,
            "alerts_per_day": alerts / days,
            "share_above_enter": np.average(group["share_above_enter"], weights=group["points"])
            if points
            else math.nan,
            "p99_score": group["p99_score"].max(),
        }
        parts += [group, pd.DataFrame([total], columns=table.columns)]
    if parts:
        table = pd.concat(parts, ignore_index=True)
    return table.set_index(["candidate", "signal"])


def candidate_thresholds(replays: Iterable[Replay]) -> dict[str, float]:
    """Each candidate's entry threshold (``thresholds.enter``), to draw it at its own."""
    return {r.candidate: r.settings.thresholds.enter for r in replays}


def score_samples(replays: Iterable[Replay]) -> dict[str, np.ndarray]:
    """Every observed held-out score of each candidate, pooled over signals and series."""
    pooled: dict[str, list[np.ndarray]] = {}
    for r in replays:
        observed = np.isfinite(r.scores.actual.to_numpy())
        pooled.setdefault(r.candidate, []).append(r.scores.signal_scores.to_numpy()[observed])
    return {name: np.concatenate(parts) for name, parts in pooled.items()}
