"""The evaluation report: tables for people, JSON for machines."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from detector.evaluation.events import EventMetrics
from detector.evaluation.nab import PROFILES
from detector.evaluation.runner import (
    CorpusReport,
    evaluate_corpus,
    nab_corpus,
    scenario_corpus,
)

__all__ = ["report_json", "report_table", "run_eval", "sensitivity_text"]


def report_table(report: CorpusReport, *, per_series: bool = True) -> str:
    """The evaluation table as plain text: one row per series and a total."""
    header = (
        f"{'series':<52} {'win':>4} {'det':>4} {'FA':>4} {'prec':>5} {'rec':>5} {'F1':>5} "
        f"{'delay':>7} {'FA/day':>6} {'NAB':>6}"
    )
    lines = [f"== {report.name} ==", header]

    def row(name: str, m: EventMetrics, nab: float) -> str:
        delay = "-" if np.isnan(m.median_delay_s) else f"{m.median_delay_s / 60:.1f}m"
        nab_text = "-" if np.isnan(nab) else f"{nab:.1f}"
        return (
            f"{name[-52:]:<52} {m.windows:>4} {m.detected:>4} {m.false_alarms:>4} "
            f"{m.precision:>5.2f} {m.recall:>5.2f} {m.f1:>5.2f} {delay:>7} "
            f"{m.false_alarms_per_day:>6.2f} {nab_text:>6}"
        )

    if per_series:
        lines += [row(n, m, report.nab_per_series[n]) for n, m in report.events.items()]
    lines.append(row("TOTAL", report.total, report.nab["standard"].score))
    if len(report.sensitivity):
        lines += ["", sensitivity_text(report)]
    lines.append(
        "NAB score (threshold optimised per profile over the corpus): "
        + ", ".join(
            f"{p} {report.nab[p].score:.1f} (t={report.nab[p].threshold:.4f})" for p in PROFILES
        )
    )
    return "\n".join(lines)


def sensitivity_text(report: CorpusReport) -> str:
    """The sensitivity table: detection rate and delays per kind of incident and strength."""
    table = report.sensitivity
    steps = [c for c in table.columns if c.startswith("rate_")]
    head = f"{'incident kind':<22} {'size':<6} {'n':>3} {'found':>6} {'delay':>7} {'visible':>8}"
    head += f" {'share':>6}" + "".join(f" {c.removeprefix('rate_'):>6}" for c in steps)
    head += f" {'lat.pg':>6}  paged by (incidents)"
    lines = [
        "sensitivity (delay: median from the start; visible: from leaving the band; lat.pg: "
        "incidents during which a latency signal paged)",
        head,
    ]

    def minutes(x: float) -> str:
        return "-" if math.isnan(x) else f"{x:.1f}m"

    for (kind, strength), r in table.iterrows():
        text = (
            f"{kind:<22} {strength:<6} {int(r.incidents):>3} {r.rate:>6.0%} "
            f"{minutes(r.delay_min):>7} {minutes(r.visible_delay_min):>8} {r.share:>6.0%}"
        )
        text += "".join(f" {r[c]:>6.0%}" for c in steps)
        lines.append(f"{text} {int(r.latency_paged):>6}  {r.paged_by}")
    shares = [o.share for o in report.outcomes]
    lines.append(f"median share of an incident's rows flagged: {float(np.median(shares)):.2f}")
    return "\n".join(lines)


def _metrics_json(m: EventMetrics) -> dict[str, float | int | None]:
    def num(x: float) -> float | None:
        return None if math.isnan(x) else round(float(x), 4)

    return {
        "windows": m.windows,
        "detected": m.detected,
        "false_alarms": m.false_alarms,
        "precision": num(m.precision),
        "recall": num(m.recall),
        "f1": num(m.f1),
        "median_delay_s": num(m.median_delay_s),
        "false_alarms_per_day": num(m.false_alarms_per_day),
    }


def _json_value(value: object) -> object:
    if isinstance(value, str):
        return value
    return None if pd.isna(value) else round(float(value), 4)


def report_json(report: CorpusReport) -> dict[str, object]:
    """The figures of one corpus as plain JSON-able data."""
    sensitivity = {
        f"{kind}/{strength}": {k: _json_value(v) for k, v in r.items()}
        for (kind, strength), r in report.sensitivity.iterrows()
    }
    return {
        "sensitivity": sensitivity,
        "total": _metrics_json(report.total),
        "nab": {
            p: {"score": round(s.score, 3), "threshold": s.threshold} for p, s in report.nab.items()
        },
        "series": {
            name: {
                **_metrics_json(m),
                "nab_standard": None
                if math.isnan(report.nab_per_series[name])
                else round(report.nab_per_series[name], 3),
            }
            for name, m in report.events.items()
        },
    }


def run_eval(
    *,
    nab: Path | None,
    scenarios: bool = True,
    seed: int = 0,
    per_file: bool = False,
    json_path: Path | None = None,
    jobs: int | None = None,
) -> int:
    """Evaluate the scenarios and NAB (when its folder exists); print the tables."""
    figures: dict[str, object] = {}
    corpora = []
    if scenarios:
        corpora.append(("scenarios", lambda: scenario_corpus(seed), True))
    if nab is not None and (nab / "labels" / "combined_windows.json").is_file():
        corpora.append(("nab", lambda: nab_corpus(nab), per_file))
    elif nab is not None:
        print(f"NAB corpus not found at {nab}: skipped")
    if not corpora:
        raise ValueError("nothing to evaluate: no scenarios and no NAB corpus")
    for key, load, rows in corpora:
        started = time.perf_counter()
        report = evaluate_corpus(load(), jobs=jobs)
        elapsed = time.perf_counter() - started
        print(report_table(report, per_series=rows))
        print(f"({elapsed:.1f} s)\n")
        figures[key] = {**report_json(report), "seconds": round(elapsed, 1)}
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(figures, indent=2) + "\n")
    return 0
