"""``llmwatch detect`` and ``llmwatch train`` as a user runs them, against a real Prometheus."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import yaml
from support.servers import free_port
from support.service import SIGNALS, STEP, history

from detector.registry.store import ModelRegistry
from llmwatch.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture
def now() -> float:
    return float(np.floor(time.time() / STEP) * STEP)


def _config(tmp_path, url: str, **extra) -> str:
    config = {
        "prometheus": {"url": url},
        "interval": "1s",
        "training_window": "3d",
        "min_train_span": "1d",
        "registry_root": str(tmp_path / "models"),
        "history_db": str(tmp_path / "var" / "history.sqlite"),
        "signals": SIGNALS,
        **extra,
    }
    path = tmp_path / "detector.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_train_fits_and_publishes_every_signal(prometheus_factory, tmp_path, now, capsys):
    prom = prometheus_factory(backfill=history(now - 60))
    assert (
        main(
            [
                "train",
                "--config",
                _config(tmp_path, "http://127.0.0.1:9"),
                "--prometheus-url",
                prom.url,
            ]
        )
        == 0
    )
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(x["signal"], x["series"]) for x in lines] == [("latency", 2), ("errors", 1)]
    registry = ModelRegistry(tmp_path / "models")
    assert registry.current("latency").version == lines[0]["version"]
    assert main(["train", "--config", _config(tmp_path, prom.url), "--signal", "nope"]) == 1
    assert "unknown signal 'nope'" in capsys.readouterr().err


def test_train_from_a_csv_file(tmp_path, capsys):
    t = np.arange(0, 3 * 86_400, 60.0) + 1_767_571_200
    rng = np.random.default_rng(0)
    path = tmp_path / "history.csv"
    lines = ['timestamp,latency,errors{route="chat"}']
    lines += [f"{x:.0f},{1 + 0.05 * rng.normal():.4f},{0.01:.4f}" for x in t]
    path.write_text("\n".join(lines) + "\n")
    assert (
        main(["train", "--config", _config(tmp_path, "http://127.0.0.1:9"), "--input", str(path)])
        == 0
    )
    out = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(x["signal"], x["series"]) for x in out] == [("latency", 1), ("errors", 1)]
    model = ModelRegistry(tmp_path / "models").load_current("errors").model
    assert model.labels == {'{route="chat"}': {"route": "chat"}}


def test_a_misspelt_key_is_an_error_naming_it(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("prometheus: {url: http://x:1, timout: 3}\nsignals: []\n")
    assert main(["train", "--config", str(path)]) == 1
    assert "prometheus.timout: unknown key" in capsys.readouterr().err


def test_detect_serves_until_terminated(prometheus_factory, tmp_path, now):
    prom = prometheus_factory(backfill=history(now - 60))
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "llmwatch.cli",
        "detect",
        "--config",
        _config(tmp_path, "http://127.0.0.1:9"),
        "--prometheus-url",
        prom.url,
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline, body = time.monotonic() + 120, ""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    body = r.read().decode()
                    break
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        assert json.loads(body)["status"] == "ok"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            assert "llmwatch_up 1.0" in r.read().decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    # uvicorn re-raises the SIGTERM it handled once the app has shut down cleanly.
    assert proc.returncode in (0, -signal.SIGTERM), out.decode()[-3000:]
    assert "Application shutdown complete" in out.decode()
    assert "Traceback" not in out.decode() and "leaked" not in out.decode()


def test_detect_with_an_unreadable_history_says_how_to_recover(tmp_path, capsys):
    config = _config(tmp_path, "http://127.0.0.1:9")
    broken = tmp_path / "var" / "history.sqlite"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a database " * 200)
    assert main(["detect", "--config", config, "--port", str(free_port())]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "history.sqlite is unreadable" in err[0]
    assert "--reset-history" in err[0] and broken.exists()
