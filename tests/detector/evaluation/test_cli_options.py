"""The command line's scenario corpus and backtest options (denominators, jobs), in-process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support.backtest_cli import error_line, run_ok, write_csv

from detector.evaluation.runner import available_cores
from detector.evaluation.scenarios import corpus_files
from llmwatch.cli import build_parser, main


def test_scenarios_writes_csvs_and_labels(tmp_path: Path, capsys) -> None:
    target = tmp_path / "scenarios"
    kinds = ["error_burst", "quiet_week"]
    args = ["scenarios", str(target), "--seed", "1", *(f"--kind={k}" for k in kinds)]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    labels_path = Path(printed["labels"])
    assert labels_path == target / "labels.json"
    labels = json.loads(labels_path.read_text())
    stems = list(corpus_files(kinds))
    assert sorted(labels) == sorted(f"{stem}.csv" for stem in stems)
    assert len(stems) == 6  # two strengths and two steps of bursts, the quiet week at both steps
    for stem in stems:
        path = target / f"{stem}.csv"
        assert path.is_file()
        for start, end in labels[f"{stem}.csv"]:
            assert pd.Timestamp(start) < pd.Timestamp(end)
    header = (target / f"{stems[0]}.csv").read_text().splitlines()[0]
    assert header.startswith("timestamp,")
    assert main(["scenarios", str(target), "--kind", "nope"]) == 1


def test_backtest_takes_denominators_and_names_a_missing_signal(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(5)
    n = 4 * 288
    idx = pd.date_range("2026-01-05", periods=n, freq="5min")
    rate = 5 + 4 * np.sin(np.arange(n) * 2 * np.pi / 288)
    requests = rng.poisson(rate * 300)
    ratio = rng.binomial(requests, 0.01) / np.maximum(requests, 1)
    frame = pd.DataFrame(
        {"timestamp": idx.strftime("%Y-%m-%d %H:%M:%S"), "rps": rate, "errors": ratio}
    )
    path = write_csv(tmp_path / "ratio.csv", frame)
    out = tmp_path / "out.csv"
    run_ok(
        [str(path), "--out", str(out), "--denominator", "errors=rps", "--direction", "errors=up"]
    )
    assert list(pd.read_csv(out).columns) == [
        "timestamp",
        "anomaly_score",
        "anomalous",
        "rps_score",
        "errors_score",
    ]
    assert main(["backtest", str(path), "--out", str(out), "--denominator", "errors=rate"]) == 1
    assert "no signal 'rate'" in error_line(capsys)
    with pytest.raises(SystemExit) as usage:
        main(["backtest", str(path), "--out", str(out), "--denominator", "errors"])
    assert usage.value.code == 2
    assert "expected SIGNAL=RATE_SIGNAL" in capsys.readouterr().err


def test_backtest_jobs_default_to_the_cores_available(tmp_path: Path) -> None:
    args = build_parser().parse_args(["backtest", "a.csv", "--out", "b.csv"])
    assert args.jobs is None  # resolved to available_cores() when run
    assert available_cores() >= 1
