"""Signal models: fitting, compaction without changing scores, publishing and loading."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pandas as pd
import pytest

from detector.core.defaults import DEFAULT_FAMILIES
from detector.core.ensemble import Ensemble
from detector.registry.store import ModelRegistry
from detector.service.config import load_settings
from detector.service.source import FileSource
from detector.service.training import SignalModel, fit_signal_model, train_signal, trainable_columns


def _frame(n: int = 4000, cols: int = 4, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    idx = pd.date_range("2026-01-05", periods=n, freq="5min")
    daily = np.sin(2 * np.pi * np.arange(n) / 288)[:, None]
    values = 1 + 0.3 * daily + 0.05 * rng.standard_t(3, size=(n, cols))
    values[n - 300 : n - 295, 1] += 1.0
    return pd.DataFrame(values, index=idx, columns=[f'{{gpu="{j}"}}' for j in range(cols)])


@pytest.mark.parametrize("families", [("seasonal",), ("seasonal", "levelshift", "iforest")])
def test_compact_keeps_every_score_and_decision(families):
    frame = _frame()
    full = Ensemble(directions="up", families=families).fit(frame.iloc[:3000])
    small = copy.deepcopy(full).compact()
    # The training residuals and most training scores go (the forest itself stays).
    forest = len(pickle.dumps(full.members_["iforest"].forest_)) if "iforest" in families else 0
    assert len(pickle.dumps(small)) - forest < (len(pickle.dumps(full)) - forest) / 2
    a, b = full.update(frame.iloc[3000:]), small.update(frame.iloc[3000:])
    # Scores below exp(-40) may differ in their last digits; nothing a threshold can see.
    np.testing.assert_allclose(a.family_scores, b.family_scores, rtol=1e-12, atol=1e-17)
    assert a.signal_anomalous.equals(b.signal_anomalous) and a.signal_anomalous.to_numpy().any()


def test_fit_signal_model_keeps_labels_and_time_range():
    frame = _frame()
    signal = load_settings(None, signals=[{"name": "mem", "query": "x"}]).signal("mem")
    model = fit_signal_model(frame, signal, {'{gpu="0"}': {"gpu": "0"}})
    assert model.columns == list(frame.columns)
    assert model.labels['{gpu="0"}'] == {"gpu": "0"} and model.labels['{gpu="1"}'] == {}
    assert model.training_end == frame.index[-1].timestamp() == model.seen_until
    assert model.params["step"] == 60.0 and model.families == list(DEFAULT_FAMILIES)


def test_trainable_columns_need_points_and_span():
    frame = _frame(n=1000, cols=3)
    frame.iloc[:900, 1] = np.nan  # 100 points over 8 hours
    frame.iloc[:, 2] = np.nan
    assert trainable_columns(frame, 50, 3600) == ['{gpu="0"}', '{gpu="1"}']
    assert trainable_columns(frame, 50, 86_400) == ['{gpu="0"}']


def test_train_signal_publishes_a_model_the_registry_loads(tmp_path):
    frame = _frame(n=3 * 288, cols=2)
    frame.columns = ['mem{gpu="0"}', 'mem{gpu="1"}']
    frame.index.name = "timestamp"
    frame.to_csv(tmp_path / "h.csv", index_label="timestamp", date_format="%Y-%m-%dT%H:%M:%SZ")
    settings = load_settings(
        None,
        registry_root=tmp_path / "models",
        min_train_span="1d",
        signals=[{"name": "mem", "query": "unused", "step": "5m"}],
    )
    registry = ModelRegistry(settings.registry_root)
    source = FileSource(tmp_path / "h.csv")
    end = frame.index[-1].timestamp()
    version = train_signal(settings, settings.signal("mem"), source, registry, end=end)
    assert version is not None and version.params["series"] == 2
    loaded = registry.load(version).model
    assert isinstance(loaded, SignalModel) and loaded.labels['{gpu="1"}'] == {"gpu": "1"}
    short = load_settings(
        None,
        registry_root=tmp_path / "models",
        min_train_span="30d",
        signals=[{"name": "mem", "query": "unused", "step": "5m"}],
    )
    assert train_signal(short, short.signal("mem"), source, registry, end=end) is None


def test_a_latency_is_trained_at_the_load_of_its_rows(tmp_path):
    rng = np.random.default_rng(3)
    n = 4 * 288
    idx = pd.date_range("2026-01-05", periods=n, freq="5min", name="timestamp")
    rate = 1 + 15 * np.clip(np.sin(2 * np.pi * np.arange(n) / 288), 0, None)
    latency = 2 * (1 + 2 * (rate / 40) ** 2) * np.exp(0.03 * rng.standard_normal(n))
    frame = pd.DataFrame({"latency_p99_seconds{}": latency, "requests_per_second{}": rate}, idx)
    frame.to_csv(tmp_path / "h.csv", date_format="%Y-%m-%dT%H:%M:%SZ")
    signals = [
        {"name": "latency_p99_seconds", "query": "unused", "step": "5m"},
        {"name": "requests_per_second", "query": "unused", "step": "5m"},
    ]
    settings = load_settings(
        None, registry_root=tmp_path / "m", min_train_span="1d", signals=signals
    )
    registry = ModelRegistry(settings.registry_root)
    signal = settings.signal("latency_p99_seconds")
    end = idx[-1].timestamp()
    version = train_signal(settings, signal, FileSource(tmp_path / "h.csv"), registry, end=end)
    assert version is not None and version.params["explained_by"] == ["requests_per_second"]
    model = registry.load(version).model
    assert model.ensemble.explained_signals() == {"{}": ("requests_per_second",)}
