"""The files a stack run writes: the detector's settings and the calibration's Prometheus config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from support.stack import PROMTOOL, run_tool

from demo.render import JOB_NAMES, StackConfigFiles
from demo.runconfig import write_calibration_config, write_detector_config
from detector.service.config import load_settings

pytestmark = pytest.mark.integration


def test_the_detector_config_is_valid_and_points_at_the_run(tmp_path: Path) -> None:
    path = write_detector_config(
        tmp_path / "detector.yaml",
        prometheus_url="http://127.0.0.1:19090",
        port=19105,
        state_dir=tmp_path / "detector",
        step=10.0,
        interval=2.0,
        training_days=3.1,
    )
    settings = load_settings(path)
    assert settings.prometheus.url == "http://127.0.0.1:19090"
    assert (settings.host, settings.port, settings.interval) == ("127.0.0.1", 19105, 2.0)
    assert settings.training_window == 3.1 * 86_400
    assert settings.registry_root == tmp_path / "detector" / "models"
    assert settings.history_db == tmp_path / "detector" / "history.sqlite"
    # The repository's signals, each on the run's step.
    assert [s.name for s in settings.signals][:2] == ["latency_p95_seconds", "latency_p99_seconds"]
    assert {s.step for s in settings.signals} == {10.0}


def test_the_calibration_config_leaves_the_detector_out(rendered: StackConfigFiles) -> None:
    path = write_calibration_config(rendered.prometheus)
    config = yaml.safe_load(path.read_text())
    jobs = [job["job_name"] for job in config["scrape_configs"]]
    assert JOB_NAMES["detector"] not in jobs and JOB_NAMES["serving"] in jobs
    assert sorted(Path(p).name for p in config["rule_files"]) == ["recording.yml", "static.yml"]
    result = run_tool(PROMTOOL, "check", "config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
