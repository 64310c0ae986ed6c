"""Backtest labelled corpora (the bundled scenarios, NAB) and score them.

Each series is backtested causally with the same defaults the service uses; event metrics come
from the ``anomalous`` decision, the NAB score from ``anomaly_score`` with one threshold per profile
optimised over the whole corpus, as NAB does.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from detector.evaluation.backtest import BacktestSettings, backtest
from detector.evaluation.events import EventMetrics, combine, event_metrics
from detector.evaluation.nab import (
    CorpusScore,
    Windows,
    load_corpus,
    load_windows,
    score_all_profiles,
)
from detector.evaluation.scenarios import (
    SIGNAL_DIRECTIONS,
    LabelledIncident,
    corpus_files,
    generate,
)
from detector.evaluation.sensitivity import IncidentOutcome, incident_outcome, sensitivity_table

__all__ = [
    "Corpus",
    "CorpusReport",
    "available_cores",
    "backtest_many",
    "evaluate_corpus",
    "nab_corpus",
    "scenario_corpus",
]


@dataclass(frozen=True)
class Corpus:
    """Labelled series to evaluate, with the detector settings that fit them.

    ``incidents`` describes each series' windows in more detail where the generator knows it
    (kind, strength, step and when each became visible), for the sensitivity table.
    """

    name: str
    frames: dict[str, pd.DataFrame]
    windows: dict[str, Windows]
    params: dict[str, Any] = field(default_factory=dict)
    incidents: dict[str, tuple[str, str, float, tuple[LabelledIncident, ...]]] = field(
        default_factory=dict
    )


@dataclass(frozen=True)
class CorpusReport:
    """Per-series event metrics, their pooled total, and the corpus NAB scores."""

    name: str
    events: dict[str, EventMetrics]
    total: EventMetrics
    nab: dict[str, CorpusScore]
    nab_per_series: dict[str, float]
    outputs: dict[str, pd.DataFrame]
    # Per kind and strength of incident (scenarios only; empty otherwise).
    sensitivity: pd.DataFrame = field(default_factory=pd.DataFrame)
    outcomes: tuple[IncidentOutcome, ...] = ()


def scenario_corpus(
    seed: int = 0, names: tuple[str, ...] | None = None, *, days: float = 10.0
) -> Corpus:
    """The bundled LLM-serving scenarios (:func:`~detector.evaluation.scenarios.corpus_files`), with
    each signal's configured alert direction."""
    frames, windows, incidents = {}, {}, {}
    for stem, (name, strength, step) in corpus_files(names).items():
        scenario = generate(name, seed=seed, step_s=step, strength=strength, days=days)
        frames[stem] = scenario.frame
        windows[stem] = scenario.windows
        incidents[stem] = (name, strength, step, scenario.incidents)
    params = {"directions": dict(SIGNAL_DIRECTIONS)}
    return Corpus("scenarios", frames, windows, params, incidents)


def nab_corpus(nab_root: str | Path) -> Corpus:
    """The NAB corpus: every file of ``data/`` with ``labels/combined_windows.json``."""
    root = Path(nab_root)
    frames = load_corpus(root)
    windows = load_windows(root / "labels" / "combined_windows.json")
    return Corpus("NAB", frames, {k: windows[k] for k in frames})


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, where the system tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _one(job: tuple[pd.DataFrame, dict[str, Any], BacktestSettings]) -> pd.DataFrame:
    frame, params, settings = job
    return backtest(frame, params, settings, signal_decisions=True)


def backtest_many(
    frames: Mapping[str, pd.DataFrame],
    params: Mapping[str, Any] | None = None,
    settings: BacktestSettings | None = None,
    *,
    jobs: int | None = None,
) -> dict[str, pd.DataFrame]:
    """Backtest several series, ``jobs`` at a time (default: one per core)."""
    settings = settings or BacktestSettings()
    work = [(frame, dict(params or {}), settings) for frame in frames.values()]
    jobs = min(jobs or available_cores(), len(work))
    if jobs <= 1:
        results = [_one(w) for w in work]
    else:
        # Largest first, so one long series does not finish alone at the end.
        order = sorted(range(len(work)), key=lambda i: -work[i][0].shape[0])
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            done = list(pool.map(_one, [work[i] for i in order]))
        results = [pd.DataFrame()] * len(work)
        for i, res in zip(order, done, strict=True):
            results[i] = res
    return dict(zip(frames.keys(), results, strict=True))


def _nab_of(
    outputs: Mapping[str, pd.DataFrame], windows: Mapping[str, Windows]
) -> dict[str, CorpusScore]:
    results = {
        name: (out.index.to_numpy("datetime64[ns]"), out["anomaly_score"].to_numpy())
        for name, out in outputs.items()
    }
    return score_all_profiles(results, {k: windows[k] for k in outputs})


def signal_decisions(output: pd.DataFrame) -> pd.DataFrame:
    """The per-signal decisions of a backtest output, one column per signal."""
    columns = [c for c in output.columns if c.endswith("_anomalous")]
    return output[columns].rename(columns=lambda c: c.removesuffix("_anomalous"))


def evaluate_corpus(
    corpus: Corpus,
    settings: BacktestSettings | None = None,
    *,
    params: Mapping[str, Any] | None = None,
    jobs: int | None = None,
) -> CorpusReport:
    """Backtest every series of ``corpus`` and score it."""
    merged = {**corpus.params, **dict(params or {})}
    outputs = backtest_many(corpus.frames, merged, settings, jobs=jobs)
    events = {
        name: event_metrics(out.index, out["anomalous"].to_numpy(), corpus.windows[name])
        for name, out in outputs.items()
    }
    nab_per_series = {}
    for name, out in outputs.items():
        # A series without windows has no NAB scale (perfect equals null); it counts in the total.
        if corpus.windows[name]:
            score = _nab_of({name: out}, corpus.windows)["standard"].score
            nab_per_series[name] = score
        else:
            nab_per_series[name] = math.nan
    outcomes = tuple(
        incident_outcome(
            outputs[stem].index,
            outputs[stem]["anomalous"].to_numpy(),
            inc.start,
            inc.end,
            signals=signal_decisions(outputs[stem]),
            visible=inc.visible,
            kind=kind,
            strength=strength,
            step_s=step,
        )
        for stem, (kind, strength, step, labelled) in corpus.incidents.items()
        for inc in labelled
    )
    return CorpusReport(
        name=corpus.name,
        events=events,
        total=combine(events.values()),
        nab=_nab_of(outputs, corpus.windows),
        nab_per_series=nab_per_series,
        outputs=outputs,
        sensitivity=sensitivity_table(outcomes),
        outcomes=outcomes,
    )
