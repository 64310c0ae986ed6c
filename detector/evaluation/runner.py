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

from detector.backtest import BacktestSettings, backtest
from detector.evaluation.events import EventMetrics, combine, event_metrics
from detector.evaluation.nab import (
    CorpusScore,
    Windows,
    load_corpus,
    load_windows,
    score_all_profiles,
)
from detector.scenarios import SCENARIO_NAMES, SIGNAL_DIRECTIONS, generate

__all__ = [
    "Corpus",
    "CorpusReport",
    "backtest_many",
    "evaluate_corpus",
    "nab_corpus",
    "scenario_corpus",
]


@dataclass(frozen=True)
class Corpus:
    """Labelled series to evaluate, with the detector settings that fit them."""

    name: str
    frames: dict[str, pd.DataFrame]
    windows: dict[str, Windows]
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CorpusReport:
    """Per-series event metrics, their pooled total, and the corpus NAB scores."""

    name: str
    events: dict[str, EventMetrics]
    total: EventMetrics
    nab: dict[str, CorpusScore]
    nab_per_series: dict[str, float]
    outputs: dict[str, pd.DataFrame]


def scenario_corpus(seed: int = 0, names: tuple[str, ...] = SCENARIO_NAMES) -> Corpus:
    """The bundled LLM-serving scenarios, with each signal's configured alert direction."""
    frames, windows = {}, {}
    for name in names:
        scenario = generate(name, seed=seed)
        frames[name] = scenario.frame
        windows[name] = scenario.windows
    return Corpus("scenarios", frames, windows, {"directions": dict(SIGNAL_DIRECTIONS)})


def nab_corpus(nab_root: str | Path) -> Corpus:
    """The NAB corpus: every file of ``data/`` with ``labels/combined_windows.json``."""
    root = Path(nab_root)
    frames = load_corpus(root)
    windows = load_windows(root / "labels" / "combined_windows.json")
    return Corpus("NAB", frames, {k: windows[k] for k in frames})


def _one(job: tuple[pd.DataFrame, dict[str, Any], BacktestSettings]) -> pd.DataFrame:
    frame, params, settings = job
    return backtest(frame, params, settings)


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
    jobs = min(jobs or os.cpu_count() or 1, len(work))
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
    return CorpusReport(
        name=corpus.name,
        events=events,
        total=combine(events.values()),
        nab=_nab_of(outputs, corpus.windows),
        nab_per_series=nab_per_series,
        outputs=outputs,
    )
