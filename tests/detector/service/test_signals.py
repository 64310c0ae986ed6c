"""Detector settings: YAML, environment and command-line overrides, errors that name the key."""

from __future__ import annotations

import pytest

from detector.service.config import ConfigError, Shard, load_settings


def _write(tmp_path, text: str):
    path = tmp_path / "detector.yaml"
    path.write_text(text)
    return path


def test_the_shipped_config_loads_with_the_measured_defaults():
    settings = load_settings("configs/detector.yaml")
    assert settings.retrain_interval == 12 * 3600 and settings.training_window == 30 * 86_400
    assert (settings.host, settings.port, settings.interval) == ("127.0.0.1", 9105, 30.0)
    assert settings.prometheus.tls_verify
    names = [s.name for s in settings.signals]
    assert "latency_p95_seconds" in names and "json_error_ratio" in names
    assert all(s.query == f"llmwatch:{s.name}" for s in settings.signals)
    # The error ratios are scored as counts of the requests the rate signal records.
    assert settings.signal("error_ratio").denominator == "requests_per_second"
    assert settings.signal("json_error_ratio").denominator == "requests_per_second"
    assert settings.signal("error_ratio").ensemble_params()["accept_after"] == 7200.0


def test_precedence_is_flags_then_environment_then_file(tmp_path, monkeypatch):
    path = _write(tmp_path, "prometheus: {url: 'http://file:9090', timeout: 5s}\nport: 1000\n")
    monkeypatch.setenv("LLMWATCH_DETECTOR_PROMETHEUS__URL", "http://env:9090")
    monkeypatch.setenv("LLMWATCH_DETECTOR_PORT", "2000")
    settings = load_settings(path)
    assert (settings.prometheus.url, settings.port, settings.prometheus.timeout) == (
        "http://env:9090",
        2000,
        5.0,
    )
    settings = load_settings(path, prometheus={"url": "http://flag:9090"}, port=3000)
    assert (settings.prometheus.url, settings.port) == ("http://flag:9090", 3000)
    assert settings.prometheus.timeout == 5.0  # the rest of the file's section stays


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("intervall: 30s\n", "intervall: unknown key"),
        ("signals: [{name: a, query: x, querry: y}]\n", "signals.0.querry: unknown key"),
        ("signals: [{name: a, query: x, direction: sideways}]\n", "signals.0.direction"),
        ("signals: [{name: a, query: x, detectors: [iforest]}]\n", "must include 'seasonal'"),
        ("signals: [{name: a, query: x, detectors: [magic]}]\n", "unknown detector families"),
        ("signals: [{name: a, query: x}, {name: a, query: y}]\n", "repeated: ['a']"),
        ("signals: [{name: a, query: x, step: 1.5s}]\n", "whole number of seconds"),
        ("signals: [{name: a, query: x, thresholds: {enter: 0.5, leave: 0.9}}]\n", "leave"),
        ("signals: [{name: a, query: x, thresholds: {refractory: -1}}]\n", "refractory"),
        ("interval: soon\n", "interval: Value error, not a duration"),
        ("shard: 3/3\n", "shard"),
        ("prometheus: {url: 'ftp://x'}\n", "prometheus.url"),
        ("prometheus: {bearer_token: a, username: b, password: c}\n", "either bearer_token"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("signals: [{name: a, query: x, denominator: rps}]\n", "denominator 'rps' is not"),
        ("signals: [{name: a, query: x, denominator: a}]\n", "must be another signal"),
        ("signals: [{name: a, query: x, accept_after: soon}]\n", "signals.0.accept_after"),
        ("signals: [{name: a, query: x, explained_by: [rps]}]\n", "explained_by ['rps'] must"),
        ("signals: [{name: a, query: x, explained_by: [a]}]\n", "explained_by ['a'] must"),
        ("signals: [{name: a, query: x, explained_by: rps}]\n", "signals.0.explained_by"),
    ],
)
def test_bad_settings_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=r"detector\.yaml") as err:
        load_settings(_write(tmp_path, text))
    assert message in str(err.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path / "absent.yaml")


def test_shards_partition_series_stably():
    labels = [{"model": f"m{i}"} for i in range(300)]
    owners = [[Shard(i, 4).owns("rps", lab) for i in range(4)] for lab in labels]
    assert all(sum(row) == 1 for row in owners)
    assert min(sum(col) for col in zip(*owners, strict=True)) > 40
    # The signal is part of the hash: the same labels of another signal may land elsewhere.
    other = [[Shard(i, 4).owns("latency", lab) for i in range(4)] for lab in labels]
    assert owners != other
    with pytest.raises(ValueError, match="i/n"):
        Shard.parse("1-2")


def test_latencies_follow_the_load_signals_unless_told_otherwise(tmp_path):
    shipped = load_settings("configs/detector.yaml")
    load = shipped.load_signals("latency_p99_seconds")
    assert "requests_per_second" in load and "output_tokens_per_request" in load
    # Requests running or waiting rise in a regression too: never a load covariate.
    assert not {"requests_running", "requests_waiting"} & set(load)
    assert shipped.load_signals("requests_per_second") == ()
    assert shipped.load_signals("gpu_memory_used_mb") == ()
    order = shipped.scoring_order()
    assert order.index("requests_per_second") < order.index("latency_p99_seconds")
    text = (
        "signals: [{name: latency_p99, query: x, explained_by: []},"
        " {name: ttft, query: y, explained_by: [rps]}, {name: rps, query: z}]\n"
    )
    settings = load_settings(_write(tmp_path, text))
    assert settings.load_signals("latency_p99") == ()
    assert settings.load_signals("ttft") == ("rps",)
    assert settings.scoring_order()[0] == "rps"


def test_signal_settings_reach_the_ensemble(tmp_path):
    text = "signals: [{name: a, query: x, thresholds: {enter: 0.9, refractory: 0}}]\n"
    params = load_settings(_write(tmp_path, text)).signal("a").ensemble_params()
    assert params["enter"] == 0.9 and params["refractory"] == 0
    assert params["families"] == ("seasonal", "levelshift", "sustained")
