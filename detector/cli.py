"""The ``llmwatch`` command line."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from detector.backtest import BacktestSettings, backtest
from detector.base import DIRECTIONS
from detector.io import InputError, read_series_csv, write_scores_csv
from detector.timeutil import parse_duration

__all__ = ["main"]


def _direction_pair(text: str) -> tuple[str, str]:
    signal, sep, direction = text.partition("=")
    if not sep or not signal or direction not in DIRECTIONS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected SIGNAL=DIRECTION with DIRECTION one of {', '.join(DIRECTIONS)}"
        )
    return signal, direction


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
    p.add_argument("--refit-every", type=_duration, default=BacktestSettings.refit_every)
    p.add_argument("--training-window", type=_duration, default=BacktestSettings.training_window)
    p.add_argument("--jobs", type=int, default=1, help="inputs scored in parallel (default 1)")
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
    p = sub.add_parser("scenarios", help="write the labelled scenarios as CSV files")
    p.add_argument("directory", type=Path)
    p.add_argument("--seed", type=int, default=0)
    return p


def _run_backtest(args: argparse.Namespace) -> int:
    if args.out and len(args.inputs) > 1:
        raise InputError("several inputs need --out-dir, not --out")
    settings = BacktestSettings(refit_every=args.refit_every, training_window=args.training_window)
    params = {"directions": dict(args.direction)} if args.direction else {}
    if args.out_dir:
        names = [path.name for path in args.inputs]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise InputError(f"inputs share a file name, outputs would collide: {', '.join(twice)}")
    loaded = [(path, *read_series_csv(path)) for path in args.inputs]
    if args.jobs > 1 and len(loaded) > 1:
        from detector.evaluation.runner import backtest_many

        frames = {str(i): frame for i, (_, frame, _) in enumerate(loaded)}
        results = list(backtest_many(frames, params, settings, jobs=args.jobs).values())
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
    from detector.scenarios import write_scenarios

    labels = write_scenarios(args.directory, seed=args.seed)
    print(json.dumps({"labels": str(labels)}))
    return 0


# Other components add their subcommands through a ``register(subparsers)`` function that sets
# ``func`` on each parser; their heavy imports stay inside the handlers so ``--help`` is instant.
_COMMAND_MODULES: tuple[str, ...] = (
    "detector.registry_cli",
    "detector.service_cli",
    "serving.cli",
    "serving.loadgen",
    "serving.model_setup",
    "detector.stack.cli",
    "detector.stack.demo_cli",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="llmwatch", description="Anomaly detection for LLM inference servers."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_backtest(sub).set_defaults(func=_run_backtest)
    _add_eval(sub).set_defaults(func=_run_eval)
    _add_scenarios(sub).set_defaults(func=_run_scenarios)
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``llmwatch`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (InputError, ValueError, OSError) as exc:
        print(f"llmwatch {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"llmwatch {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
