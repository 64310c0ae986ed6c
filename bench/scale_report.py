"""The figures of ``bench/scale.py`` as a table, and the per-series slopes between its runs.

A slope between two runs is (figure at N2 - figure at N1) / (N2 - N1): what one more series
costs, the fixed part cancelled. The same figure divided by N at each N shows whether a cost grows
faster than linearly (the per-series figure then rises with N).
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

# (key, label, unit scale per series, unit name): figures read from a run by ``_figure``.
FIGURES = (
    ("pull_s", "pull per cycle", 1e6, "us"),
    ("score_s", "score per cycle (run_cycle - pull)", 1e6, "us"),
    ("publish_s", "  of which the readers' snapshot", 1e6, "us"),
    ("export_s", "export: render /metrics", 1e6, "us"),
    ("cycle_s", "cycle (pull + score)", 1e6, "us"),
    ("metrics_bytes", "/metrics size", 1.0, "B"),
    ("rss_loaded_mib", "RSS, models loaded", 2**20 / 1e3, "KB"),
    ("rss_after_mib", "RSS, after the cycles", 2**20 / 1e3, "KB"),
    ("serve_hwm_mib", "peak RSS, serving process", 2**20 / 1e3, "KB"),
    ("fetch_s", "fit phase: fetch, all signals", 1e3, "ms"),
    ("fit_s", "fit phase: fit, all signals", 1e3, "ms"),
    ("fit_hwm_mib", "peak RSS, fit process", 2**20 / 1e3, "KB"),
    ("artifact_mib", "model artifacts on disk", 2**20 / 1e3, "KB"),
)


PER_SERIES = (
    "llmwatch_anomaly_score",
    "llmwatch_expected_value",
    "llmwatch_expected_lower",
    "llmwatch_expected_upper",
    "llmwatch_anomalous",
    "llmwatch_event_peak_score",
    "llmwatch_load_factor",
)


def _figure(run: dict[str, Any], key: str) -> float:
    serve, fit = run["serve"], run["fit"]
    if key == "serve_hwm_mib":
        return float(serve["hwm_mib"])
    if key == "fit_hwm_mib":
        return float(fit["hwm_mib"])
    if key in ("fetch_s", "fit_s"):
        return float(sum(s[key] for s in fit["signals"]))
    if key == "artifact_mib":
        return sum(s["artifact_bytes"] for s in fit["signals"]) / 2**20
    return float(serve[key])


def slopes(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-series slope of every figure between consecutive runs, and the fixed part it implies."""
    out = []
    ordered = sorted(runs, key=lambda r: r["series"])
    for a, b in pairwise(ordered):
        span = b["series"] - a["series"]
        row: dict[str, Any] = {"from": a["series"], "to": b["series"]}
        for key, *_ in FIGURES:
            slope = (_figure(b, key) - _figure(a, key)) / span
            row[key] = {"per_series": slope, "fixed": _figure(a, key) - slope * a["series"]}
        out.append(row)
    return out


def _num(x: float) -> str:
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def table(out: dict[str, Any]) -> list[str]:
    """Markdown rows: each figure at each N, then per series at each N, then the slopes."""
    runs = sorted(out["runs"], key=lambda r: r["series"])
    ns = [r["series"] for r in runs]
    head = "| figure | " + " | ".join(f"N={n:,}" for n in ns)
    head += (
        " | per series at each N | "
        + " | ".join(f"slope {s['from']:,}->{s['to']:,}" for s in out["slopes"])
        + " |"
    )
    lines = [head, "|" + "---|" * (2 + len(ns) + len(out["slopes"]))]
    for key, label, scale, unit in FIGURES:
        values = [_figure(r, key) for r in runs]
        raw_unit = {"B": "B"}.get(unit, "MiB" if "mib" in key else "s")
        cells = [f"{_num(v)} {raw_unit}" for v in values]
        per = " / ".join(_num(v * scale / n) for v, n in zip(values, ns, strict=True))
        slope_cells = [f"{_num(s[key]['per_series'] * scale)} {unit}" for s in out["slopes"]]
        lines.append(
            f"| {label} | "
            + " | ".join(cells)
            + f" | {per} {unit} | "
            + " | ".join(slope_cells)
            + " |"
        )
    return lines


def report(out: dict[str, Any]) -> None:
    """Print the table, the outputs per input series, the fits, the retrain and the probes."""
    print("\n".join(table(out)))
    for run in sorted(out["runs"], key=lambda r: r["series"]):
        serve = run["serve"]
        n = max(serve["tracked_series"], 1)
        per = {
            k.removeprefix("llmwatch_"): round(serve["families"].get(k, 0) / n, 3)
            for k in PER_SERIES
        }
        total = sum(serve["families"].values()) / n
        print(
            f"N={run['series']:,}: tracked {serve['tracked_series']:,}; samples per series "
            f"{per}, all {total:.2f}; model load {serve['load_s']:.1f} s; RSS before the "
            f"service {serve['rss_base_mib']:.0f} MiB; import {run['import_s']:.0f} s"
        )
        for sig in run["fit"]["signals"]:
            print(
                f"    fit {sig['signal']}: {sig['series']} series, fetch {sig['fetch_s']:.2f} s,"
                f" fit {sig['fit_s']:.2f} s"
            )
        during = serve.get("during_retrain")
        if during:
            print(
                f"  retrain of every signal during cycles: {during['fit_all_s']:.0f} s, "
                f"{during['cycles']} cycles back to back, median "
                f"{_num(during['cycle_median_s'] or 0)} s, max "
                f"{_num(during['cycle_max_s'] or 0)} s (without a fit: "
                f"{_num(serve['cycle_s'])} s)"
            )
    for probe in out.get("probes", []):
        kept = {k: round(v) for k, v in probe["calibrator_values_per_series"].items()}
        print(
            f"fit probe: {probe['series']} series x {probe['days']:g} d ({probe['points']} "
            f"points each): {probe['fit_s']:.2f} s, peak RSS {probe['hwm_mib']:.0f} MiB "
            f"(data alone {probe['rss_with_data_mib']:.0f} MiB); model "
            f"{probe['model_bytes_per_series'] / 1e3:.1f} KB per series; calibrator values "
            f"kept per series {kept}"
        )
