"""``stack.json``: what a running demo writes for the notebooks, without running the stack."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from demo.launch import StackLauncher, StackOptions
from demo.stackfile import (
    DEFAULT_STACK_FILE,
    STACK_FIELDS,
    StackInfo,
    describe_stack,
    read_stack_file,
    stack_is_running,
    write_stack_file,
)
from demo.supervisor import Supervisor
from detector.service.config import load_settings


def _info(**changes: object) -> StackInfo:
    base: dict[str, object] = {
        "prometheus_url": "http://127.0.0.1:9090",
        "api_url": "http://127.0.0.1:9105",
        "grafana_url": None,
        "alertmanager_url": "http://127.0.0.1:9093",
        "serving_url": "http://127.0.0.1:8080",
        "webhook_url": "http://127.0.0.1:5001/alerts",
        "config": "/srv/var/demo/config/detector.yaml",
        "registry_root": "/srv/var/demo/detector/models",
        "step": 15.0,
        "history_days": 4.0,
        "started_at": 1_767_571_200.0,
        "ready_at": 1_767_571_400.0,
        "stops_at": 1_767_571_920.0,
        "pid": os.getpid(),
    }
    return StackInfo(**{**base, **changes})  # type: ignore[arg-type]


def test_the_file_round_trips_with_the_documented_keys(tmp_path: Path) -> None:
    path = write_stack_file(tmp_path / "stack.json", _info())
    assert list(json.loads(path.read_text())) == list(STACK_FIELDS)
    assert read_stack_file(path) == _info()
    assert [p.name for p in tmp_path.iterdir()] == ["stack.json"]  # no temporary left
    # Where the demo writes it by default (its state folder), as the notebooks expect it.
    assert Path("var/demo/stack.json") == DEFAULT_STACK_FILE
    assert StackOptions().state_dir / "stack.json" == DEFAULT_STACK_FILE
    assert {"prometheus_url", "api_url", "config", "registry_root", "step"} <= set(STACK_FIELDS)


def test_reading_a_missing_newer_or_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "stack.json"
    assert read_stack_file(path) is None
    newer = {**json.loads(write_stack_file(path, _info()).read_text()), "loki_url": "x"}
    path.write_text(json.dumps(newer))
    assert read_stack_file(path) == _info()
    path.write_text(json.dumps({"api_url": "http://x"}))
    with pytest.raises(ValueError, match="missing prometheus_url"):
        read_stack_file(path)
    path.write_text("{half")
    with pytest.raises(ValueError, match="not JSON"):
        read_stack_file(path)


def test_a_dead_demo_is_told_by_its_pid() -> None:
    assert stack_is_running(_info())
    assert not stack_is_running(_info(pid=2**22 + 12345))  # above Linux's pid_max


def test_the_launcher_describes_its_stack_and_removes_the_file(tmp_path: Path) -> None:
    options = StackOptions(engine="synthetic", state_dir=tmp_path / "demo", ports={}, step=10.0)
    with Supervisor(options.state_dir) as supervisor:
        stack = StackLauncher(options, supervisor)
        stack.state.mkdir(parents=True, exist_ok=True)
        (stack.state / "config").mkdir()
        stack.detector_config()  # what start_detector writes for the detector it starts
        before = time.time()
        info = describe_stack(stack, started_at=before - 60, stops_at=before + 600)
        path = write_stack_file(stack.stack_file, info)
        assert path == (tmp_path / "demo" / "stack.json").resolve()
        settings = load_settings(info.config)
        assert Path(info.config) == stack.detector_config_path.resolve()
        assert Path(info.registry_root) == settings.registry_root.resolve()
        assert Path(info.registry_root) == (tmp_path / "demo" / "detector" / "models").resolve()
        assert info.api_url == stack.url("detector") == f"http://{settings.host}:{settings.port}"
        assert info.prometheus_url == settings.prometheus.url
        assert info.step == 10.0 and {s.step for s in settings.signals} == {10.0}
        assert info.grafana_url is None and info.pid == os.getpid()
        assert info.ready_at >= before and info.stops_at == before + 600
        stack.close()
        assert not path.exists()
