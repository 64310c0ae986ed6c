"""The benchmark script still runs: ``bench/run.py --quick`` end to end, on a slice of NAB.

Only that it runs and reports every figure is checked; the timings themselves are for people to
read (a timed assertion would fail on a busy machine, not on slow code).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from support.requires import NAB_ROOT, REPO, need_nab

pytestmark = pytest.mark.integration


def test_quick_benchmark_reports_every_figure(tmp_path: Path) -> None:
    need_nab()
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "bench/run.py", "--nab", str(NAB_ROOT), "--quick", "--json", str(out)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["quick"] is True
    figures = report["figures"]
    assert [f["name"].split(",")[0] for f in figures] == [
        "NAB backtest",
        "NAB backtest",
        "score 1 new row",
        "score 1 new row",  # with the multivariate stage on
        "fit SeasonalBaseline",
    ]
    for figure in figures:
        assert math.isfinite(figure["measured_s"]) and figure["measured_s"] > 0, figure
        assert math.isfinite(figure["naive_s"]) and figure["naive_s"] > 0, figure
