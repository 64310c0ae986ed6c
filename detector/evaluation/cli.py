"""The evaluation commands of ``llmwatch``: ``backtest``, ``eval`` and ``scenarios``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from detector.core.base import DIRECTIONS
from detector.evaluation.backtest import BacktestSettings, backtest
from detector.evaluation.csvio import InputError, read_series_csv, write_scores_csv
from llmwatch.durations import duration_argument

__all__ = ["register"]


def _direction_pair(text: str) -> tuple[str, str]:
    signal, sep, direction = text.partition("=")
    if not sep or not signal or direction not in DIRECTIONS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected SIGNAL=DIRECTION with DIRECTION one of {', '.join(DIRECTIONS)}"
        )
    return signal, direction


def _denominator_pair(text: str) -> tuple[str, str]:
    signal, sep, rate = text.partition("=")
    if not sep or not signal or not rate:
        raise argparse.ArgumentTypeError(f"{text!r}: expected SIGNAL=RATE_SIGNAL")
    return signal, rate


def _add_backtest(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "backtest",
        help="score CSV series causally, as the service would have",
        description="Score timestamp,<signal>... CSV files causally: a row's score uses only "
        "rows up to it, and the model is refitted periodically on past rows only.",
    )
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT.csv")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", type=Path, help="output CSV (one input)")
    target.add_argument("--out-dir", type=Path, help="output folder (one file per input)")
    p.add_argument(
        "--direction",
        action="append",
        type=_direction_pair,
        default=[],
        metavar="SIGNAL=DIR",
        help="alert direction of a signal: up, down or both (default both); repeatable",
    )
    p.add_argument(
        "--denominator",
        action="append",
        type=_denominator_pair,
        default=[],
        metavar="SIGNAL=RATE_SIGNAL",
        help="SIGNAL is a ratio whose trials per row are RATE_SIGNAL (per second) times the "
        "row's step in seconds, so it is scored as counts; repeatable (without one, a ratio's "
        "denominator is looked for among the file's signals)",
    )
    p.add_argument("--refit-every", type=duration_argument, default=BacktestSettings.refit_every)
    p.add_argument(
        "--training-window", type=duration_argument, default=BacktestSettings.training_window
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="inputs scored in parallel (default: the cores available)",
    )
    return p


def _add_eval(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "eval",
        help="backtest labelled scenarios (and NAB) and print the evaluation table",
        description="Backtest the bundled LLM-serving scenarios and, when present, the NAB "
        "corpus with the default settings; print event-level and NAB scores.",
    )
    p.add_argument("--nab", type=Path, help="NAB root (with data/ and labels/); skipped if absent")
    p.add_argument("--no-scenarios", action="store_true", help="evaluate NAB only")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated scenarios")
    p.add_argument("--per-file", action="store_true", help="one row per NAB file too")
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    p.add_argument("--jobs", type=int, default=None, help="series in parallel (default: cores)")
    return p


def _add_scenarios(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "scenarios",
        help="write the labelled scenarios as CSV files",
        description="Write the evaluation corpus: every kind of incident at both strengths "
        "and at 30 s and 60 s steps, as <kind>_<strength>_<step>.csv, with labels.json.",
    )
    p.add_argument("directory", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--kind",
        action="append",
        metavar="NAME",
        help="only this kind of incident (repeatable; default: all)",
    )
    return p


def _check_denominators(frame: pd.DataFrame, path: Path, denominators: dict[str, str]) -> None:
    """Every ``--denominator`` names two signals of the file."""
    for ratio, rate in denominators.items():
        for name in (ratio, rate):
            if name not in frame.columns:
                raise InputError(
                    f"{path}: --denominator {ratio}={rate}: no signal {name!r} "
                    f"(signals: {', '.join(frame.columns)})"
                )


def _warn_backtest(message: str) -> None:
    print(f"llmwatch backtest: warning: {message}", file=sys.stderr)


def _run_backtest(args: argparse.Namespace) -> int:
    if args.out and len(args.inputs) > 1:
        raise InputError("several inputs need --out-dir, not --out")
    settings = BacktestSettings(refit_every=args.refit_every, training_window=args.training_window)
    params: dict[str, object] = {"directions": dict(args.direction)} if args.direction else {}
    if args.denominator:
        params["denominators"] = dict(args.denominator)
    if args.out_dir:
        names = [path.name for path in args.inputs]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise InputError(f"inputs share a file name, outputs would collide: {', '.join(twice)}")
    loaded = [(path, *read_series_csv(path, warn=_warn_backtest)) for path in args.inputs]
    from detector.evaluation.runner import available_cores, backtest_many

    jobs = args.jobs if args.jobs is not None else available_cores()
    if jobs < 1:
        raise InputError(f"--jobs must be at least 1, got {jobs}")
    for path, frame, _ in loaded:
        _check_denominators(frame, path, dict(args.denominator))
    if jobs > 1 and len(loaded) > 1:
        frames = {str(i): frame for i, (_, frame, _) in enumerate(loaded)}
        results = list(backtest_many(frames, params, settings, jobs=jobs).values())
    else:
        show = None if len(loaded) == 1 else False
        results = [backtest(frame, params, settings, progress=show) for _, frame, _ in loaded]
    for (path, _, stamps), result in zip(loaded, results, strict=True):
        target = args.out if args.out else args.out_dir / path.name
        write_scores_csv(target, stamps, result)
    return 0


def _run_eval(args: argparse.Namespace) -> int:
    from detector.evaluation.report import run_eval

    return run_eval(
        nab=args.nab,
        scenarios=not args.no_scenarios,
        seed=args.seed,
        per_file=args.per_file,
        json_path=args.json,
        jobs=args.jobs,
    )


def _run_scenarios(args: argparse.Namespace) -> int:
    from detector.evaluation.scenarios import write_scenarios

    labels = write_scenarios(args.directory, seed=args.seed, names=args.kind)
    print(json.dumps({"labels": str(labels)}))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``backtest``, ``eval`` and ``scenarios`` commands."""
    _add_backtest(sub).set_defaults(func=_run_backtest)
    _add_eval(sub).set_defaults(func=_run_eval)
    _add_scenarios(sub).set_defaults(func=_run_scenarios)
