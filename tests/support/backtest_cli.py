"""Running ``llmwatch backtest`` in tests: input files, a run that must succeed, its error line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmwatch.cli import main

__all__ = ["error_line", "nab_rows", "run_ok", "write_csv", "write_text"]


def nab_rows(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    idx = pd.date_range("2026-01-05", periods=n, freq="5min")
    values = 20 + 5 * np.sin(np.arange(n) * 2 * np.pi / 288) + rng.normal(0, 0.5, n)
    values[-10] = 80.0  # one obvious spike once models exist
    return pd.DataFrame({"timestamp": idx.strftime("%Y-%m-%d %H:%M:%S"), "value": values})


def write_csv(path: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(path, index=False)
    return path


def write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def run_ok(args: list[str]) -> None:
    assert main(["backtest", *args, "--refit-every", "12h"]) == 0


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("llmwatch backtest: error: ")
    return lines[0]
