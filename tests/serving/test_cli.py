"""``llmwatch serve``: a real server process on a free port, and start-up errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from support.serving import free_port

from llmwatch.cli import main

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_serve_synthetic_answers_and_shuts_down_cleanly(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "LLMWATCH_SERVING_ADMIN_TOKEN": "t0ken"}
    command = [
        sys.executable,
        "-m",
        "llmwatch.cli",
        "serve",
        "--engine",
        "synthetic",
        "--port",
        str(port),
    ]
    command += ["--speed", "20", "--metric-prefix", "demo", "--log-level", "warning"]
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.2)
        answer = httpx.post(
            f"{url}/v1/completions", json={"prompt": "hi", "max_tokens": 5}, timeout=10
        )
        assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 5
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        assert 'demo_requests_total{status="success"} 1.0' in metrics
        # The synthetic engine's vLLM metrics, unprefixed as vLLM's own.
        labels = '{engine="0",model_name="synthetic"}'
        assert f"vllm:request_queue_time_seconds_count{labels} 1.0" in metrics
        assert f"vllm:num_preemptions_total{labels} 0.0" in metrics
        admin = httpx.get(
            f"{url}/admin/faults", headers={"Authorization": "Bearer t0ken"}, timeout=10
        )
        assert admin.status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
    assert "Traceback" not in (tmp_path / "serve.log").read_text()


def test_serve_refuses_an_open_admin_api_on_a_public_address(
    capsys: pytest.CaptureFixture[str],
) -> None:
    os.environ.pop("LLMWATCH_SERVING_ADMIN_TOKEN", None)
    assert main(["serve", "--engine", "synthetic", "--host", "0.0.0.0"]) == 1
    assert "admin_token" in capsys.readouterr().err


def test_serve_reports_a_bad_fault_schedule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    schedule = tmp_path / "faults.yaml"
    schedule.write_text("faults:\n  - {kind: errors, share: 0.5}\n")
    assert main(["serve", "--engine", "synthetic", "--faults", str(schedule)]) == 1
    err = capsys.readouterr().err
    assert "faults[0].share: unknown key" in err and str(schedule) in err


def test_serve_help_lists_the_contract_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    for flag in ("--engine", "--model", "--host", "--port", "--metric-prefix", "--faults"):
        assert flag in out


def test_flags_reach_the_settings_and_the_synthetic_engine() -> None:
    from llmwatch.cli import build_parser
    from serving.cli import build_engine, settings_from_args

    flags = "serve --engine synthetic --max-running 3 --max-model-len 512 --speed 8 --seed 4"
    args = build_parser().parse_args(
        [
            *flags.split(),
            "--loop-share",
            "0.5",
            "--request-timeout",
            "9",
            "--max-body-bytes",
            "2048",
        ]
    )
    settings = settings_from_args(args)
    assert (settings.max_running, settings.request_timeout_s) == (3, 9.0)
    assert settings.max_body_bytes == 2048
    engine = build_engine(settings)
    assert (engine.max_running, engine.max_model_len, engine.speed) == (3, 512, 8.0)
    assert (engine.seed, engine.loop_share) == (4, 0.5)
    assert engine.kv_capacity() == 32_768
    args = build_parser().parse_args([*flags.split(), "--kv-cache-tokens", "4096"])
    assert build_engine(settings_from_args(args)).kv_capacity() == 4096


def test_the_package_loads_no_numba_until_a_tracker_runs() -> None:
    # vLLM's CPU worker, spawned with `llmwatch.cli` as its main module, scans the objects of every
    # loaded module at start-up and fails on llvmlite's; numba must load only when a tracker runs.
    code = """
import importlib, pkgutil, sys
import detector, serving
for package in (detector, serving):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if info.name not in ("serving.engines.vllm", "serving.locustfile"):
            importlib.import_module(info.name)
print(sorted(m for m in ("numba", "llvmlite") if m in sys.modules))
from detector.core.ensemble import Ensemble
import pandas as pd
index = pd.date_range("2026-01-05", periods=300, freq="h")
Ensemble().fit(pd.DataFrame({"x": range(300)}, index=index))
print(sorted(m for m in ("numba", "llvmlite") if m in sys.modules))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[:2] == ["[]", "['llvmlite', 'numba']"]
