"""Publishing a candidate: verified versions, figures in the manifest, rollback, service swap."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from support.servers import free_port
from support.workbench import ApiServer

from detector.evaluation.scenarios import generate
from detector.registry.manifest import data_hash
from detector.registry.store import ModelRegistry
from detector.service.config import Shard, load_settings
from detector.service.loop import DetectorService
from detector.service.server import create_app
from detector.service.source import FileSource, SeriesBatch, series_key
from detector.service.training import SignalModel
from detector.workbench import (
    EVALUATION_COLUMNS,
    HISTORY_COLUMNS,
    Candidate,
    config_snippet,
    evaluation_figures,
    publish_candidate,
    rollback,
    served_versions,
    versions_table,
    wait_until_served,
)

ROUTES = ({"route": "chat"}, {"route": "completions"})
STRICT = Candidate("strict", {"thresholds": {"enter": 0.99}})


def _setup(tmp_path: Path, **extra):
    frame = generate("quiet_week", seed=0, days=3, step_s=300).frame
    keys = [series_key(r) for r in ROUTES]
    errors = pd.DataFrame({k: frame["error_ratio"] * (1 + i) for i, k in enumerate(keys)})
    history = {
        "error_ratio": SeriesBatch(errors, {series_key(r): dict(r) for r in ROUTES}),
        "requests_per_second": SeriesBatch(
            frame[["requests_per_second"]].set_axis(["{}"], axis=1), {"{}": {}}
        ),
    }
    settings = load_settings(
        None,
        registry_root=tmp_path / "models",
        history_db=tmp_path / "history.sqlite",
        min_train_span="1d",
        signals=[
            {"name": "error_ratio", "query": "llmwatch:error_ratio", "direction": "up"},
            {"name": "requests_per_second", "query": "llmwatch:requests_per_second"},
        ],
        **extra,
    )
    return history, settings, ModelRegistry(settings.registry_root)


def test_publishing_stores_a_verified_version_per_signal_with_its_figures(tmp_path) -> None:
    history, settings, registry = _setup(tmp_path)
    figures = {"*": {"scenarios_f1": 0.5}, "error_ratio": {"scenarios_f1": 0.5, "history_x": 2}}
    published = publish_candidate(registry, settings, history, STRICT, evaluation=figures)
    assert list(published) == ["error_ratio", "requests_per_second"]
    for name, version in published.items():
        assert registry.current(name) == version
        assert version.params["candidate"] == "strict" and version.params["enter"] == 0.99
        assert version.data_hash == data_hash(history[name].frame)
        loaded = registry.load(version).model
        assert isinstance(loaded, SignalModel) and loaded.ensemble.enter == 0.99
        assert loaded.columns == list(history[name].frame.columns)  # series keys, as served
        assert loaded.evaluation == version.evaluation
    assert published["error_ratio"].evaluation == {"scenarios_f1": 0.5, "history_x": 2.0}
    assert published["requests_per_second"].evaluation == {"scenarios_f1": 0.5}
    assert published["error_ratio"].params["series"] == 2
    assert published["error_ratio"].libraries["numpy"] == np.__version__


def test_a_shard_publishes_its_own_series_under_its_own_folder(tmp_path) -> None:
    # The replica of 3 that owns the first route (the hash is stable across machines and runs).
    index = next(i for i in range(3) if Shard(i, 3).owns("error_ratio", ROUTES[0]))
    history, settings, registry = _setup(tmp_path, shard=f"{index}/3")
    published = publish_candidate(registry, settings, history, Candidate("c"))
    owned = [series_key(r) for r in ROUTES if Shard(index, 3).owns("error_ratio", r)]
    version = published["error_ratio"]
    assert version.signal == f"error_ratio.shard-{index}-of-3"
    assert registry.load(version).model.columns == owned
    assert version.params["shard"] == f"{index}/3"
    table = versions_table(registry, settings)
    assert {v for _, v in table.index} == {v.version for v in published.values()}


def test_versions_table_marks_current_pinned_and_corrupt_versions(tmp_path) -> None:
    history, settings, registry = _setup(tmp_path)
    first = publish_candidate(registry, settings, history, Candidate("first"))
    second = publish_candidate(registry, settings, history, STRICT)
    table = versions_table(registry, settings, ["error_ratio"])
    assert list(table["candidate"]) == ["first", "strict"]
    assert list(table["current"]) == [False, True] and not table["pinned"].any()
    assert table["verified"].all()

    now = rollback(registry, settings, ["error_ratio"])
    assert now["error_ratio"].version == first["error_ratio"].version
    assert registry.current("error_ratio").version == first["error_ratio"].version
    table = versions_table(registry, settings, ["error_ratio"])
    assert list(table["current"]) == [True, False] and list(table["pinned"]) == [True, False]

    artifact = second["error_ratio"].artifact_path
    blob = bytearray(artifact.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # a flipped byte; a zip may already end with a zero byte
    artifact.write_bytes(bytes(blob))
    assert list(versions_table(registry, settings, ["error_ratio"])["verified"]) == [True, False]


def test_evaluation_figures_combine_scenario_totals_and_each_signals_replay() -> None:
    scenarios = pd.DataFrame(
        [[4, 4, 0, 1.0, 1.0, 1.0, math.nan, 0.0, 90.0, 91.0, 89.0]],
        columns=list(EVALUATION_COLUMNS),
        index=pd.Index(["c"], name="candidate"),
    )
    history = pd.DataFrame(
        [[1, 100, 1.0, 2, 2.0, 0.01, 0.5], [1, 100, 1.0, 2, 2.0, 0.01, 0.5]],
        columns=list(HISTORY_COLUMNS),
        index=pd.MultiIndex.from_tuples([("c", "rps"), ("c", "ALL")]),
    )
    out = evaluation_figures("c", scenarios, history)
    assert set(out) == {"*", "rps"}
    assert "scenarios_delay_min" not in out["*"]  # NaN: no detection to time
    assert out["*"]["scenarios_nab_standard"] == 90.0
    assert out["rps"]["history_alerts_per_day"] == 2.0 and out["rps"]["scenarios_f1"] == 1.0
    assert evaluation_figures("c", scenarios) == {"*": out["*"]}


def test_config_snippet_is_the_candidate_as_configuration(tmp_path) -> None:
    _, settings, _ = _setup(tmp_path)
    text = config_snippet(settings, STRICT, ["error_ratio"])
    again = load_settings(None, **yaml.safe_load(text))
    assert again.signals == [STRICT.apply(settings.signal("error_ratio"))]


def test_the_running_service_swaps_in_what_is_published(tmp_path) -> None:
    history, settings, registry = _setup(tmp_path, interval=0.2)
    # The service reads its values from a file here: what is served matters, not the scores.
    frame = history["requests_per_second"].frame.set_axis(["requests_per_second"], axis=1)
    frame.rename_axis("timestamp").to_csv(tmp_path / "history.csv")
    first = publish_candidate(registry, settings, history, Candidate("first"))
    service = DetectorService(
        settings, source=FileSource(tmp_path / "history.csv"), executor=ThreadPoolExecutor(1)
    )
    with ApiServer(create_app(settings, service=service)) as api:
        assert wait_until_served(api.url, first, timeout=20) == {
            "error_ratio": True,
            "requests_per_second": True,
        }
        second = publish_candidate(registry, settings, history, STRICT)
        assert all(wait_until_served(api.url, second, timeout=20).values())
        assert served_versions(api.url) == {k: v.version for k, v in second.items()}
        stale = wait_until_served(api.url, {"error_ratio": first["error_ratio"]}, timeout=0.3)
        assert stale == {"error_ratio": False}
    # A service that is not there: the error names the URL and the parameter that skips it.
    gone = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionError, match=rf"{gone}.*WAIT_FOR_SERVICE_S = 0"):
        served_versions(gone)
