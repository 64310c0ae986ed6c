"""The configuration files a stack run writes besides the rendered ones (:mod:`.render`).

- :func:`write_detector_config`: ``configs/detector.yaml`` pointed at the run's Prometheus and
  port, every signal at the run's query step, its models and event history in the run's folder;
- :func:`write_calibration_config`: the rendered ``prometheus.yml`` without the detector (no
  scrape job, no rules about it), for the calibration that runs before the detector exists, so
  that its absence raises no alert meanwhile.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from demo.render import JOB_NAMES, default_configs_dir

__all__ = ["write_calibration_config", "write_detector_config"]

_DETECTOR_RULES = "anomaly.yml"  # the anomaly alerts and the detector's health alerts


def write_detector_config(
    path: Path,
    *,
    prometheus_url: str,
    port: int,
    state_dir: Path,
    step: float,
    interval: float,
    training_days: float,
    source: Path | None = None,
) -> Path:
    """Write the detector's settings for a run to ``path``; returns it.

    ``source`` is the configuration to start from (default the repository's
    ``configs/detector.yaml``); its signals and their directions are kept.
    """
    source = source or default_configs_dir() / "detector.yaml"
    config = yaml.safe_load(source.read_text(encoding="utf-8"))
    for signal in config.get("signals", []):
        signal["step"] = f"{step:g}s"
    config.update(
        prometheus={"url": prometheus_url, "timeout": "10s"},
        interval=f"{interval:g}s",
        training_window=f"{training_days:g}d",
        registry_root=str(Path(state_dir) / "models"),
        history_db=str(Path(state_dir) / "history.sqlite"),
        host="127.0.0.1",
        port=port,
    )
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def write_calibration_config(prometheus_config: Path) -> Path:
    """``prometheus-calibration.yml`` beside a rendered ``prometheus.yml``, without the detector."""
    config = yaml.safe_load(prometheus_config.read_text(encoding="utf-8"))
    config["rule_files"] = [p for p in config["rule_files"] if Path(p).name != _DETECTOR_RULES]
    job = JOB_NAMES["detector"]
    config["scrape_configs"] = [c for c in config["scrape_configs"] if c["job_name"] != job]
    path = prometheus_config.with_name("prometheus-calibration.yml")
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path
