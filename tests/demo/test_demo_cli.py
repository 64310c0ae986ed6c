"""``llmwatch demo`` as a user runs it: Ctrl-C (or SIGTERM) stops every process it started."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.stack import need

from demo.demo import describe_fault
from demo.launch import ALERTMANAGER, PROMETHEUS
from llmwatch.cli import main

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_demo_leaves_no_process_behind(tmp_path: Path, signum: int) -> None:
    need(PROMETHEUS)
    need(ALERTMANAGER)
    state = tmp_path / "demo"
    argv = [sys.executable, "-m", "llmwatch.cli", "demo", "--engine", "synthetic"]
    argv += ["--state-dir", str(state), "--duration", "10m", "--calibration", "5m"]
    demo = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # Interrupted while it calibrates: serving, load, Alertmanager and Prometheus run.
        deadline = time.monotonic() + 90
        names = set()
        while time.monotonic() < deadline and not {"prometheus", "loadgen"} <= names:
            assert demo.poll() is None, demo.stdout.read()
            names = {p.stem for p in (state / "run").glob("*.pid")}
            time.sleep(0.2)
        assert names == {"serving", "loadgen", "alertmanager", "prometheus"}
        pids = [int((state / "run" / f"{n}.pid").read_text().split()[0]) for n in names]
        assert all(_alive(pid) for pid in pids)
        demo.send_signal(signum)
        output, _ = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 130, output
    assert "interrupted: stopping every component" in output
    assert not [pid for pid in pids if _alive(pid)]
    assert list((state / "run").glob("*.pid")) == []
    assert (state / "logs" / "serving.log").exists()


def test_too_little_history_is_refused(capsys: pytest.CaptureFixture) -> None:
    assert main(["demo", "--engine", "synthetic", "--history-days", "1"]) == 1
    assert "--history-days must exceed 2" in capsys.readouterr().err


def test_faults_are_described_for_people() -> None:
    assert describe_fault({"kind": "latency", "intensity": 8, "duration": 180}) == (
        "latency +8 s before the first token, for 180 s"
    )
    assert describe_fault({"kind": "corrupt_json", "intensity": 0.5}) == (
        "corrupt JSON: 50% of JSON answers broken, until stopped"
    )
