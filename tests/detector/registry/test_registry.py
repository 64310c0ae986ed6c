"""Tests of the model registry: layout, atomic publish, verification before loading, rollback,
old pickles refused, and the round trip of every family (housekeeping: test_registry_hygiene)."""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from detector.core.defaults import FAMILIES
from detector.core.ensemble import Ensemble
from detector.core.families.iforest import IsolationForestDetector
from detector.core.families.levelshift import LevelShiftDetector
from detector.core.families.seasonal import SeasonalBaseline
from detector.core.families.sustained import SustainedShift
from detector.registry.manifest import LIBRARIES
from detector.registry.store import ModelRegistry, ModelVersion, RegistryError, data_hash
from detector.service.config import SignalSettings
from detector.service.training import fit_signal_model

WINDOW = {"training_start": "2026-01-05T00:00:00Z", "training_end": "2026-01-06T00:00:00Z"}


def publish(reg: ModelRegistry, signal: str = "rps", model: object = None, **kw) -> ModelVersion:
    return reg.publish(
        signal, model if model is not None else {"m": 1}, data_hash="h", params={}, **WINDOW, **kw
    )


def edit_manifest(target: ModelVersion, **changes) -> None:
    path = target.path / "manifest.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


class _Touch:
    """Unpickling this creates a file: proof of whether an artifact was ever unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


@pytest.fixture
def reg(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "models")


def test_publish_writes_manifest_and_artifact(reg: ModelRegistry) -> None:
    v = reg.publish(
        "llm:latency_p95:5m",
        {"a": np.float64(2.0)},
        training_start=pd.Timestamp("2026-01-05"),
        training_end=1767657600,
        data_hash="abc",
        params={"window": np.int64(8), "families": ("seasonal",)},
        evaluation={"f1": 0.9},
    )
    assert v.path == reg.root / "llm:latency_p95:5m" / v.version
    assert sorted(p.name for p in v.path.iterdir()) == ["manifest.json", "model.npz"]
    data = json.loads((v.path / "manifest.json").read_text())
    assert data["signal"] == "llm:latency_p95:5m" and data["version"] == v.version
    assert data["training_start"] == "2026-01-05T00:00:00Z"
    assert data["training_end"] == "2026-01-06T00:00:00Z"
    assert data["params"] == {"window": 8, "families": ["seasonal"]}
    assert data["evaluation"] == {"f1": 0.9} and data["data_hash"] == "abc"
    assert set(data["libraries"]) == set(LIBRARIES) and data["libraries"]["numpy"] == np.__version__
    blob = (v.path / "model.npz").read_bytes()
    assert data["artifact"]["file"] == "model.npz" and data["artifact"]["size"] == len(blob)
    assert data["artifact"]["sha256"] == hashlib.sha256(blob).hexdigest()
    assert list((reg.root / ".staging").iterdir()) == []  # nothing left half-written
    assert reg.load(v).model == {"a": 2.0}


def test_versions_sort_by_publication_and_newest_is_current(reg: ModelRegistry) -> None:
    published = [publish(reg, model={"n": i}) for i in range(3)]
    publish(reg, "other")
    assert [v.version for v in reg.versions("rps")] == [v.version for v in published]
    assert reg.current("rps") == published[-1]
    assert reg.signals() == ["other", "rps"]
    assert reg.current("missing") is None and reg.versions("missing") == []


def test_unstorable_model_leaves_nothing_behind(reg: ModelRegistry) -> None:
    with pytest.raises(RegistryError, match=r"cannot store function: .* not an allowed class"):
        publish(reg, model=lambda x: x)
    with pytest.raises(RegistryError, match="params"):
        publish(reg, model={"ok": 1}, evaluation={"bad": object()})
    assert reg.versions("rps") == []
    assert not list(reg.root.glob(".staging/*"))


@pytest.mark.parametrize("name", ["../escape", ".hidden", "a/b", "", "x" * 200, "a..b", "é"])
def test_unsafe_signal_names_are_refused(reg: ModelRegistry, tmp_path: Path, name: str) -> None:
    with pytest.raises(RegistryError, match="invalid signal name"):
        publish(reg, name)
    with pytest.raises(RegistryError, match="invalid signal name"):
        reg.versions(name)
    assert not (tmp_path / "escape").exists()


def test_bad_version_ids_are_refused(reg: ModelRegistry) -> None:
    publish(reg)
    for bad in ["../../etc", "latest", ""]:
        with pytest.raises(RegistryError, match="invalid version id"):
            reg.get("rps", bad)
    with pytest.raises(RegistryError, match="no version"):
        reg.get("rps", "20200101T000000000000Z-abcdef")


def test_corrupt_artifact_is_refused_before_loading(reg: ModelRegistry) -> None:
    v = publish(reg, model={"n": 1})
    other = publish(reg, "other", model={"n": 2})
    shutil.copy(other.artifact_path, v.artifact_path)  # a valid model file, not this one
    with pytest.raises(RegistryError, match=r"sha256 .* does not match"):
        reg.load(v)


def _as_pickle_version(v: ModelVersion, blob: bytes, name: str = "model.pkl") -> None:
    """Rewrite a version as its attacker (or an older llmwatch) would: artifact and manifest."""
    v.artifact_path.unlink()
    (v.path / name).write_bytes(blob)
    sha = hashlib.sha256(blob).hexdigest()
    edit_manifest(v, artifact={"file": name, "sha256": sha, "size": len(blob)})


def test_a_pickle_with_a_matching_manifest_never_runs(reg: ModelRegistry, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    evil = pickle.dumps(_Touch(marker))
    old, disguised = publish(reg), publish(reg, "other")
    _as_pickle_version(old, evil)
    with pytest.raises(RegistryError, match=r"is a pickle .*: refit with llmwatch train"):
        reg.load(old)
    with pytest.raises(RegistryError, match="refit with llmwatch train"):
        reg.verify(reg.get("rps", old.version))
    _as_pickle_version(
        disguised, evil, name="model.npz"
    )  # the checksum matches: the format stops it
    with pytest.raises(RegistryError, match="cannot load the artifact: not a model file"):
        reg.load(disguised)
    assert not marker.exists()
    pickle.loads(evil)  # the same bytes, unpickled, would have run
    assert marker.exists()


def test_an_old_pickle_version_is_skipped_and_not_rolled_back_to(reg: ModelRegistry) -> None:
    good = publish(reg, model={"n": 1})
    newest = publish(reg, model={"n": 2})
    _as_pickle_version(newest, pickle.dumps({"n": 2}))
    assert reg.current("rps") == reg.get("rps", newest.version)  # listed, and refused on load
    assert reg.load_current("rps").model == {"n": 1}
    with pytest.raises(RegistryError, match="refit with llmwatch train"):
        reg.rollback("rps", newest.version)
    assert reg.rollback("rps", good.version).version == good.version


def test_truncated_artifact_is_refused(reg: ModelRegistry) -> None:
    v = publish(reg)
    blob = v.artifact_path.read_bytes()
    v.artifact_path.write_bytes(blob[:-3])
    with pytest.raises(RegistryError, match="bytes, the manifest says"):
        reg.load(v)
    v.artifact_path.unlink()
    with pytest.raises(RegistryError, match="missing"):
        reg.load(v)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"signal": "other"}, "lies in"),
        ({"version": "20200101T000000000000Z-abcdef"}, "lies in"),
        ({"artifact": {"file": "../model.pkl", "sha256": "0" * 64, "size": 1}}, "plain file"),
        ({"artifact": {"file": "model.npz", "sha256": "xyz", "size": 1}}, "64 hex"),
        ({"format": 99}, "unknown manifest format"),
        ({"training_end": "yesterday-ish"}, "manifest.json"),
        ({"params": [1, 2]}, "JSON object"),
    ],
)
def test_manifest_that_does_not_match_is_refused(reg: ModelRegistry, change, reason) -> None:
    v = publish(reg)
    edit_manifest(v, **change)
    with pytest.raises(RegistryError, match=reason):
        reg.load(v)
    assert reg.versions("rps") == []  # listed versions are only those with a usable manifest


def test_missing_or_garbled_manifest(reg: ModelRegistry) -> None:
    v = publish(reg)
    (v.path / "manifest.json").write_text("{not json")
    with pytest.raises(RegistryError, match="unreadable manifest"):
        reg.get("rps", v.version)
    (v.path / "manifest.json").unlink()
    with pytest.raises(RegistryError, match=r"manifest\.json is missing"):
        reg.get("rps", v.version)


def test_library_policy(reg: ModelRegistry, caplog: pytest.LogCaptureFixture) -> None:
    v = publish(reg)
    major, minor, *_ = np.__version__.split(".")
    edit_manifest(v, libraries={**v.libraries, "numpy": f"{major}.{int(minor) + 1}.0"})
    with caplog.at_level(logging.WARNING, logger="detector.registry.store"):
        loaded = reg.load(v)
    assert loaded.model == {"m": 1} and "numpy" in loaded.warnings[0]
    assert "library version differs" in caplog.text
    edit_manifest(v, libraries={**v.libraries, "numpy": f"{int(major) + 1}.0.0"})
    with pytest.raises(RegistryError, match="incompatible libraries: numpy"):
        reg.load(v)
    edit_manifest(v, libraries={k: x for k, x in v.libraries.items() if k != "pandas"})
    assert reg.load(v).warnings == (f"pandas None (model) vs {pd.__version__} (running)",)
    edit_manifest(v, libraries={**v.libraries, "python": "2.7.18"})
    with pytest.raises(RegistryError, match=r"incompatible libraries: python 2\.7\.18"):
        reg.load(v)


def test_rollback_to_previous_then_named_then_publish_clears_it(reg: ModelRegistry) -> None:
    a, b, c = (publish(reg, model={"n": i}) for i in range(3))
    assert reg.rollback("rps") == b and reg.current("rps") == b and reg.pinned("rps") == b.version
    assert reg.rollback("rps") == a
    with pytest.raises(RegistryError, match="no version older"):
        reg.rollback("rps")
    assert reg.rollback("rps", c.version) == c
    reg.rollback("rps", a.version)
    d = publish(reg, model={"n": 3})
    assert reg.current("rps") == d and reg.pinned("rps") is None
    with pytest.raises(RegistryError, match="no versions"):
        reg.rollback("unknown")


def test_rollback_refuses_a_corrupt_target(reg: ModelRegistry) -> None:
    a, b = publish(reg), publish(reg)
    a.artifact_path.write_bytes(b"garbage")
    with pytest.raises(RegistryError, match="bytes, the manifest says"):
        reg.rollback("rps")
    assert reg.current("rps") == b


def test_pointer_to_a_removed_version_falls_back_to_newest(reg: ModelRegistry) -> None:
    a, b = publish(reg), publish(reg)
    reg.rollback("rps")
    shutil.rmtree(a.path)
    assert reg.current("rps") == b
    (reg.root / "rps" / "CURRENT").write_text("not json")
    assert reg.current("rps") == b


def test_load_current_falls_back_past_a_corrupt_newest(reg: ModelRegistry) -> None:
    publish(reg, model={"n": 1})
    newest = publish(reg, model={"n": 2})
    newest.artifact_path.write_bytes(b"x")
    loaded = reg.load_current("rps")
    assert loaded.model == {"n": 1}
    loaded.version.artifact_path.write_bytes(b"y")
    with pytest.raises(RegistryError, match="no loadable version"):
        reg.load_current("rps")


def test_fingerprint_notices_changes_made_through_another_instance(reg: ModelRegistry) -> None:
    assert reg.fingerprint() == {}
    publish(reg)
    before = reg.fingerprint()
    assert reg.changed_since(before) == set()
    other = ModelRegistry(reg.root)  # e.g. a notebook or `llmwatch train`
    publish(other)
    assert reg.changed_since(before) == {"rps"}
    before = reg.fingerprint()
    other.rollback("rps")
    assert reg.changed_since(before) == {"rps"}
    before = reg.fingerprint()
    publish(other, "new_signal")
    assert reg.changed_since(before) == {"new_signal"}


def test_data_hash_is_stable_and_sensitive() -> None:
    idx = pd.date_range("2026-01-05", periods=4, freq="min")
    frame = pd.DataFrame({"a": [1.0, 2.0, np.nan, 4.0], "b": [1, 2, 3, 4]}, index=idx)
    same = frame.copy()
    assert data_hash(frame) == data_hash(same) == data_hash(frame.tz_localize("UTC"))
    assert data_hash(frame) != data_hash(frame.rename(columns={"b": "c"}))
    assert data_hash(frame) != data_hash(frame.set_axis(idx + pd.Timedelta("1s")))
    changed = frame.copy()
    changed.iloc[3, 0] = 4.0000001
    assert data_hash(frame) != data_hash(changed)


# -- save -> load round trip of every estimator family and of the ensemble -------------------
DAY = 288


def _frame() -> pd.DataFrame:
    n = 3 * DAY + 60
    idx = pd.date_range("2026-01-05", periods=n, freq="5min")
    rng = np.random.default_rng(7)
    daily = np.sin(np.arange(n) * 2 * np.pi / DAY)
    return pd.DataFrame(
        {"a": 10 + 3 * daily + rng.normal(size=n), "b": 5 - daily + rng.normal(size=n)}, index=idx
    )


FAMILY_ESTIMATORS = {
    "seasonal": lambda: SeasonalBaseline(directions={"a": "up"}),
    "levelshift": lambda: LevelShiftDetector(window=8),
    "iforest": lambda: IsolationForestDetector(n_estimators=20, random_state=0),
    "sustained": lambda: SustainedShift(min_span=0.0),
}


def _parts(frame: pd.DataFrame) -> pd.DataFrame:
    """The sustained family's input: residuals here, and no ratio counts."""
    nothing = frame * np.nan
    return SustainedShift.parts(frame, nothing, nothing)


# What each family reads, from the plain frame of the other families.
FAMILY_INPUTS = {"sustained": _parts}


def test_every_family_has_a_round_trip_case() -> None:
    assert set(FAMILY_ESTIMATORS) == set(FAMILIES)


@pytest.mark.parametrize("family", sorted(FAMILY_ESTIMATORS))
def test_round_trip_of_each_family(reg: ModelRegistry, family: str) -> None:
    data = FAMILY_INPUTS.get(family, lambda frame: frame)(_frame())
    train, test = data.iloc[: 3 * DAY], data.iloc[3 * DAY :]
    model = FAMILY_ESTIMATORS[family]().fit(train)
    v = reg.publish(
        family,
        model,
        training_start=train.index[0],
        training_end=train.index[-1],
        data_hash=data_hash(train),
        params=model.get_params(),
    )
    loaded = reg.load(reg.current(family)).model
    assert type(loaded) is type(model) and loaded.get_params() == model.get_params()
    pd.testing.assert_frame_equal(loaded.score(test), model.score(test), check_exact=True)
    assert v.params == json.loads(json.dumps(v.params))  # stored as plain JSON


def test_round_trip_of_a_fitted_ensemble(reg: ModelRegistry) -> None:
    data = _frame()
    train, test = data.iloc[: 3 * DAY], data.iloc[3 * DAY :].copy()
    test.iloc[20:30, 0] += 8.0
    model = Ensemble(directions={"a": "up"}, families=FAMILIES).fit(train)
    reg.publish(
        "group",
        model,
        training_start=model.training_start_,
        training_end=model.training_end_,
        data_hash=data_hash(train),
        params=model.get_params(),
        evaluation={"f1": 1.0},
    )
    loaded = reg.load_current("group")
    assert loaded.version.evaluation == {"f1": 1.0}
    want, got = model.update(test), loaded.model.update(test)
    pd.testing.assert_series_equal(got.anomaly_score, want.anomaly_score, check_exact=True)
    pd.testing.assert_frame_equal(got.family_scores, want.family_scores, check_exact=True)
    assert got.anomalous.equals(want.anomalous) and want.anomalous.iloc[20:30].any()


def test_streaming_state_survives_the_round_trip(reg: ModelRegistry) -> None:
    """Fit, update, save, load, update more: the same scores as a model that was never saved."""
    data = _frame()
    data.iloc[3 * DAY + 40 : 3 * DAY + 50, 1] -= 6.0
    train, first, rest = data.iloc[: 3 * DAY], data.iloc[3 * DAY : 3 * DAY + 30], data.iloc[-30:]
    settings = SignalSettings(name="mem", query="q", direction="down", detectors=FAMILIES)
    model = fit_signal_model(train, settings, labels={"a": {"gpu": "0"}})
    model.ensemble.update(first)
    v = reg.publish(
        "mem", model, data_hash="h", params=model.params, **WINDOW, evaluation={"f1": 0.5}
    )
    loaded = reg.load(v).model
    assert loaded.labels == {"a": {"gpu": "0"}, "b": {}} and loaded.params == model.params
    want, got = model.ensemble.update(rest), loaded.ensemble.update(rest)
    for name in ("anomaly_score", "anomalous", "signal_scores", "family_scores", "expected"):
        left, right = pd.DataFrame(getattr(got, name)), pd.DataFrame(getattr(want, name))
        pd.testing.assert_frame_equal(left, right, check_exact=True)
    assert want.anomalous.any()
