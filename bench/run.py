"""Benchmark the detector against the naive per-point reference in ``bench/naive.py``.

Three figures, each as an absolute time and as a speed-up over the naive reference run in the same
process: the NAB corpus backtest (jobs=1 and jobs=2), scoring one new row of 1,000 signals with a
fitted ``Ensemble``, and fitting ``SeasonalBaseline`` on 7 days at 15 s; and scoring that row with
the multivariate stage on, against the default ensemble (figure 2b). Nothing here asserts: the
script reports target, measurement and whether the target is met.

Usage: ``python bench/run.py --nab ../shared/nab [--quick] [--json PATH]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `naive` sits next to this script

import naive

from detector.core.defaults import DEFAULT_FAMILIES
from detector.core.ensemble import Ensemble
from detector.core.families.seasonal import SeasonalBaseline
from detector.core.timeutil import DAY_S, seconds
from detector.evaluation.backtest import backtest
from detector.evaluation.runner import backtest_many, nab_corpus


@dataclass
class Figure:
    """One line of the table: what was timed, against which target, and the naive reference."""

    name: str
    target_s: float
    measured_s: float
    naive_s: float
    naive_note: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def speedup(self) -> float:
        return self.naive_s / self.measured_s if self.measured_s > 0 else float("nan")

    @property
    def met(self) -> bool:
        return self.measured_s <= self.target_s


def environment() -> dict[str, Any]:
    """Cores, load and library versions: the numbers mean little without them."""
    libs = ("numpy", "pandas", "scipy", "scikit-learn", "statsmodels", "llmwatch")
    return {
        "cpu_count": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {name: version(name) for name in libs},
    }


def median_time(fn: Callable[[], object], repeats: int) -> tuple[float, list[float]]:
    """Median wall time of ``repeats`` calls, after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def _cpu_s() -> float:
    """CPU seconds of this process and of its finished children (the backtest workers)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


# -- figure 1: the NAB corpus backtest ---------------------------------------------------------
def nab_frames(root: str, quick: bool) -> tuple[dict[str, pd.DataFrame], str]:
    """The corpus, or for ``--quick`` ten 5-minute files cut to their first 1,000 rows."""
    frames = nab_corpus(root).frames
    if not quick:
        return frames, f"{len(frames)} files"
    # The first model needs two days (576 rows at 5 min); 1,000 rows then give three refits.
    five_min = [k for k, f in sorted(frames.items()) if np.median(np.diff(seconds(f.index))) == 300]
    picked = five_min[:: max(len(five_min) // 10, 1)][:10]
    return {k: frames[k].iloc[:1000] for k in picked}, f"quick: {len(picked)} files x 1000 rows"


def _time_corpus(
    frames: dict[str, pd.DataFrame],
) -> tuple[dict[str, pd.DataFrame], dict[int, float], dict[int, float], dict[int, float]]:
    """Outputs at jobs=2, and per jobs value the wall time, CPU time and load average after."""
    timings, loads, cpu = {}, {}, {}
    for jobs in (1, 2):
        cpu_start = _cpu_s()
        start = time.perf_counter()
        outputs = backtest_many(frames, jobs=jobs)
        timings[jobs] = time.perf_counter() - start
        cpu[jobs] = _cpu_s() - cpu_start
        load = loads[jobs] = os.getloadavg()[0]
        # CPU time well below jobs x wall time means the processes waited for a core.
        print(
            f"  NAB backtest jobs={jobs}: {timings[jobs]:.1f} s wall, {cpu[jobs]:.1f} s CPU "
            f"(load average {load:.2f})",
            flush=True,
        )
    return outputs, timings, cpu, loads


def _naive_subset(
    frames: dict[str, pd.DataFrame], outputs: dict[str, pd.DataFrame], budget_s: float
) -> tuple[float, float, list[str], float]:
    """Detector and naive seconds on the files done within the budget, and their worst gap."""
    # Naive and detector on the same files, alternately, until the budget is spent; the corpus
    # estimate scales the measured corpus time by their ratio (cost follows refits, not points).
    order = sorted(frames)
    random.Random(0).shuffle(order)
    real_s = naive_s = 0.0
    done: list[str] = []
    worst = 0.0
    for name in order:
        if naive_s + real_s >= budget_s:
            break
        start = time.perf_counter()
        backtest(frames[name])
        mid = time.perf_counter()
        ref = naive.backtest(frames[name])
        real_s, naive_s = real_s + mid - start, naive_s + time.perf_counter() - mid
        diff = (ref["anomaly_score"] - outputs[name]["anomaly_score"]).abs().max()
        worst = max(worst, float(diff))
        done.append(name)
    return real_s, naive_s, done, worst


def bench_nab(root: str, quick: bool, budget_s: float) -> list[Figure]:
    """Corpus backtest via ``backtest_many`` (jobs=1, 2); naive time from a subset if need be."""
    frames, label = nab_frames(root, quick)
    points = sum(f.shape[0] for f in frames.values())
    smallest = min(frames.values(), key=len)
    backtest(smallest.iloc[:800])  # warm-up: imports, first-call caches (one refit)
    outputs, timings, cpu, loads = _time_corpus(frames)
    real_s, naive_s, done, worst = _naive_subset(frames, outputs, budget_s)
    sub_points = sum(frames[k].shape[0] for k in done)
    ratio = naive_s / real_s
    full = len(done) == len(frames)
    note = (
        f"naive run on all {len(done)} files"
        if full
        else f"naive ESTIMATED: ran {len(done)}/{len(frames)} files ({sub_points:,} points), "
        f"naive/detector {ratio:.2f}x there, times the corpus time at jobs=1"
    )
    note += f"; max |naive - detector| anomaly_score {worst:.2g}"
    naive_total = naive_s if full else ratio * timings[1]
    details = {
        "files": len(frames),
        "points": points,
        "naive_files": len(done),
        "naive_points": sub_points,
        "naive_estimated": not full,
        "subset_detector_s": real_s,
        "subset_naive_s": naive_s,
        "max_abs_diff_anomaly_score": worst,
    }
    return [
        Figure(f"NAB backtest, {label}, {points:,} pts, jobs={j}", 60.0, timings[j], naive_total,
               note, {**details, "jobs": j, "cpu_s": cpu[j], "load_avg_after": loads[j]})
        for j in (1, 2)
    ]  # fmt: skip


# -- figure 2: one new row for many signals ----------------------------------------------------
def synthetic(n_signals: int, n_rows: int, step_s: float, seed: int = 0) -> pd.DataFrame:
    """Positive daily-seasonal signals with multiplicative noise, like request rates."""
    rng = np.random.default_rng(seed)
    index = pd.date_range("2026-01-05", periods=n_rows, freq=pd.Timedelta(seconds=step_s))
    phase = 2 * np.pi * (seconds(index) % DAY_S) / DAY_S
    base = rng.uniform(1.0, 100.0, n_signals)
    amp = rng.uniform(0.1, 0.5, n_signals)
    shift = rng.uniform(0.0, 2 * np.pi, n_signals)
    season = 1.0 + amp * np.sin(phase[:, None] + shift)
    noise = 1.0 + 0.05 * rng.standard_normal((n_rows, n_signals))
    columns = [f"s{j:04d}" for j in range(n_signals)]
    return pd.DataFrame(base * season * noise, index=index, columns=columns)


def bench_score(n_signals: int, train_days: float, repeats: int) -> Figure:
    """Median time of ``Ensemble.update`` on one new row; the naive one on the same rows."""
    n_train = round(train_days * DAY_S / 300)
    frame = synthetic(n_signals, n_train + repeats + 1, 300.0)
    train, new = frame.iloc[:n_train], frame.iloc[n_train:].copy()
    # A quarter of the signals shift up 30 %: scores away from 0 make the agreement check bite.
    new.iloc[:, ::4] *= 1.3
    start = time.perf_counter()
    model = Ensemble().fit(train)
    fit_s = time.perf_counter() - start
    t_train, t_new = seconds(train.index).tolist(), seconds(new.index).tolist()
    start = time.perf_counter()
    ref = naive.Ensemble(t_train, train.to_numpy().tolist())
    naive_fit_s = time.perf_counter() - start
    rows = new.to_numpy().tolist()
    real, slow, diffs = [], [], []
    for i in range(repeats + 1):  # row 0 is the warm-up, for both
        start = time.perf_counter()
        out = model.update(new.iloc[i : i + 1])
        mid = time.perf_counter()
        score = ref.step(t_new[i], rows[i])[0]
        real.append(mid - start)
        slow.append(time.perf_counter() - mid)
        diffs.append(abs(score - float(out.anomaly_score.iloc[0])))
    return Figure(
        f"score 1 new row, {n_signals:,} signals (median of {repeats})",
        0.050,
        statistics.median(real[1:]),
        statistics.median(slow[1:]),
        f"fitted on {n_train} rows ({train_days:g} d at 5 min) in {fit_s:.1f} s (naive "
        f"{naive_fit_s:.1f} s); max |naive - detector| anomaly_score {max(diffs):.2g}",
        {"signals": n_signals, "train_rows": n_train, "fit_s": fit_s, "naive_fit_s": naive_fit_s,
         "max_abs_diff_anomaly_score": max(diffs), "update_times_s": real[1:]},
    )  # fmt: skip


def bench_multivariate(n_signals: int, train_days: float, repeats: int) -> Figure:
    """``Ensemble.update`` on one new row with the multivariate stage on (cross residuals and
    the isolation forest over every signal) and a third of the signals latencies expected at
    the load of the row; the reference is the default families on the same rows."""
    n_train = round(train_days * DAY_S / 300)
    frame = synthetic(n_signals, n_train + repeats + 1, 300.0, seed=2)
    names = ["requests_per_second", "output_tokens_per_request"]
    names += [f"latency_p95_seconds_{j}" for j in range(n_signals // 3)]
    frame.columns = names + list(frame.columns[len(names) :])
    train, new = frame.iloc[:n_train], frame.iloc[n_train:].copy()
    new.iloc[:, ::4] *= 1.3
    start = time.perf_counter()
    full = Ensemble(families=(*DEFAULT_FAMILIES, "iforest")).fit(train)
    fit_s = time.perf_counter() - start
    plain = Ensemble().fit(train)
    timed: dict[str, list[float]] = {"full": [], "plain": []}
    for i in range(repeats + 1):  # row 0 is the warm-up, for both
        for key, model in (("full", full), ("plain", plain)):
            start = time.perf_counter()
            model.update(new.iloc[i : i + 1])
            timed[key].append(time.perf_counter() - start)
    explained = len(full.explained_signals())
    return Figure(
        f"score 1 new row, {n_signals:,} signals, multivariate stage on (median of {repeats})",
        0.050,
        statistics.median(timed["full"][1:]),
        statistics.median(timed["plain"][1:]),
        f"reference: the default families without it on the same rows; fitted in {fit_s:.1f} "
        f"s; {explained} signals expected at the load of the row",
        {"signals": n_signals, "fit_s": fit_s, "load_aware": explained,
         "update_times_s": timed["full"][1:], "default_times_s": timed["plain"][1:]},
    )  # fmt: skip


# -- figure 3: fitting the seasonal baseline ---------------------------------------------------
def bench_fit(repeats: int) -> Figure:
    """``SeasonalBaseline().fit`` on 7 days at 15 s for one signal, and the naive equivalent."""
    frame = synthetic(1, 7 * 5760, 15.0, seed=1)
    t, values = seconds(frame.index).tolist(), frame.iloc[:, 0].tolist()
    measured, times = median_time(lambda: SeasonalBaseline().fit(frame), repeats)
    slow, slow_times = median_time(lambda: naive.fit_baseline(t, values), max(repeats // 2, 1))
    z_real = SeasonalBaseline().fit(frame).train_decomposition_.z.iloc[:, 0].to_numpy()
    z_naive = np.array(naive.fit_baseline(t, values)[1])
    return Figure(
        f"fit SeasonalBaseline, 1 signal, {frame.shape[0]:,} pts (7 d at 15 s)",
        1.0,
        measured,
        slow,
        f"median of {repeats} (naive: {len(slow_times)}); max |naive - detector| z "
        f"{np.nanmax(np.abs(z_real - z_naive)):.2g}",
        {"times_s": times, "naive_times_s": slow_times,
         "max_abs_diff_z": float(np.nanmax(np.abs(z_real - z_naive)))},
    )  # fmt: skip


# -- output ------------------------------------------------------------------------------------
def fmt_s(seconds_: float) -> str:
    """Seconds in a unit that keeps three significant figures readable."""
    if seconds_ < 1.0:
        return f"{seconds_ * 1e3:.1f} ms"
    return f"{seconds_:.1f} s" if seconds_ < 600 else f"{seconds_ / 60:.1f} min"


def print_table(figures: list[Figure], env: dict[str, Any]) -> None:
    """The table, then the notes that say how each naive time was obtained."""
    libs = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    print(f"\ncores: {env['cpu_count']} ({env['usable_cores']} usable), python {env['python']}")
    print(f"libraries: {libs}")
    w = max(len(f.name) for f in figures)
    head = f"{'figure':<{w}} {'target':>8} {'measured':>10} {'naive':>10} {'speed-up':>9}  result"
    print("\n" + head + "\n" + "-" * len(head))
    for i, f in enumerate(figures, 1):
        star = "*" if f.details.get("naive_estimated") else ""
        print(
            f"{f.name:<{w}} {'< ' + fmt_s(f.target_s):>8} {fmt_s(f.measured_s):>10} "
            f"{fmt_s(f.naive_s) + star:>10} {f.speedup:>8.2f}x  {'met' if f.met else 'not met'}"
        )
        if f.naive_note:
            print(f"  [{i}] {f.naive_note}")
    print("speed-up = naive time / measured time (same process); * = naive time estimated")


def main(argv: list[str] | None = None) -> None:
    """Run the figures, print the table, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nab", default="../shared/nab", help="NAB root (data/, labels/)")
    parser.add_argument("--quick", action="store_true", help="reduced sizes for a smoke test")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--naive-budget", type=float, default=None, help="seconds for the naive NAB subset"
    )
    args = parser.parse_args(argv)
    # The detector's overflow warnings on extreme scores are expected and do not change timings.
    warnings.simplefilter("ignore", RuntimeWarning)
    env = environment()
    if env["load_avg_1m"] > 0.5:
        print(f"warning: load average {env['load_avg_1m']} before start; timings may be inflated")
    budget = args.naive_budget or (20.0 if args.quick else 180.0)
    figures: list[Figure] = []
    print("figure 1: NAB backtest ...", flush=True)
    figures += bench_nab(args.nab, args.quick, budget)
    print("figure 2: score one row ...", flush=True)
    figures.append(bench_score(100 if args.quick else 1000, 3.0, 10 if args.quick else 50))
    print("figure 2b: score one row with the multivariate stage ...", flush=True)
    figures.append(bench_multivariate(100 if args.quick else 1000, 3.0, 10 if args.quick else 50))
    print("figure 3: fit seasonal baseline ...", flush=True)
    figures.append(bench_fit(3 if args.quick else 5))
    env["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    print_table(figures, env)
    if args.json:
        rows = [{**asdict(f), "speedup": f.speedup, "met": f.met} for f in figures]
        payload = {"environment": env, "quick": args.quick, "figures": rows}
        args.json.write_text(json.dumps(payload, indent=2, default=float))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
