"""Tests of the model file: every supported type round-trips exactly, everything else is refused,
and crafted files (naming os.system, holding object arrays or pickles) never run anything."""

from __future__ import annotations

import importlib
import io
import json
import os
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import IsolationForest

from detector.core.calibration import TailCalibrator
from detector.core.features import Window
from detector.registry.modelfile import ALLOWED_CLASSES, FORMAT, ModelFileError, dumps, loads

pytestmark = pytest.mark.integration


def _same(a: Any, b: Any) -> None:
    """Assert ``b`` is ``a`` rebuilt: same types, same values, same bits."""
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, check_exact=True, check_freq=True)
    elif isinstance(a, pd.Index):
        pd.testing.assert_index_equal(a, b, exact=True, check_exact=True)
        assert getattr(a, "freq", None) == getattr(b, "freq", None)
    elif isinstance(a, np.ndarray | np.generic):
        assert a.dtype == b.dtype and np.shape(a) == np.shape(b)
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
        assert np.isfortran(a) == np.isfortran(b)  # memory order is kept, as a pickle keeps it
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _same(x, y)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            _same(a[key], b[key])
    elif isinstance(a, float):
        assert struct.pack("<d", a) == struct.pack("<d", b)  # -0.0 and NaN included
    else:
        assert a == b


DAYS = pd.date_range("2026-01-05", periods=4, freq="5min", unit="us", name="t")
VALUES = [
    None,
    True,
    0,
    -(2**70),
    1.5,
    -0.0,
    float("nan"),
    float("inf"),
    float("-inf"),
    "",
    "héllo",
    [1, [2, None]],
    (1, ("a", 2.5), ()),
    {},
    {"a": 1, 2: "b", ("s", "seasonal"): [3], 1.5: None, None: 0, float("inf"): 1},
    np.arange(6.0).reshape(2, 3),
    np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    np.arange(10)[::3],
    np.array([np.nan, -0.0, np.inf, 1e-310]),
    np.zeros((0, 4)),
    np.array(3.5),
    np.array([1, 2], dtype=np.int8),
    np.array([1, 2], dtype=">u4"),
    np.array([True, False]),
    np.array([1 + 2j]),
    np.zeros(2, dtype=[("left", "<i8"), ("x", "<f8"), ("flag", "u1")]),
    np.float64(0.1),
    np.float32(2.5),
    np.int64(-3),
    np.bool_(True),
    pd.Timestamp("2026-01-05 00:00:01.5"),
    pd.Timestamp("2026-01-05", tz="UTC").as_unit("ns"),
    DAYS,
    DAYS.tz_localize("UTC"),
    pd.DatetimeIndex(["2026-01-05", "2026-01-07"]),
    pd.Index(["a", "b"]),
    pd.Index(["a", ("b", 1)], dtype=object),
    pd.Index([3, 1, 2]),
    pd.Index([0.5, np.nan], name="x"),
    pd.MultiIndex.from_tuples([("a", "seasonal"), ("b", "iforest")], names=[None, "family"]),
    pd.DataFrame({"a": [1.0, np.nan, 3.0, 4.0], "b": [5.0, 6.0, 7.0, 8.0]}, index=DAYS),
    pd.DataFrame(
        np.ones((2, 2)),
        index=pd.Index([3, 1]),
        columns=pd.MultiIndex.from_tuples([("score", "a"), ("keep", "a")]),
    ),
    pd.DataFrame(index=DAYS, columns=pd.Index([], dtype="str")),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_supported_values_round_trip_exactly(value: Any) -> None:
    _same(value, loads(dumps(value)))


def test_allowed_instances_round_trip_with_their_state() -> None:
    window = Window(2, 3)
    window.extend(np.arange(8.0).reshape(4, 2))
    rng = np.random.default_rng(0)
    calibrator = TailCalibrator(tail="normal").fit(rng.exponential(size=300), horizon_points=288)
    back = loads(dumps([window, calibrator]))
    _same(vars(window), vars(back[0]))
    _same(vars(calibrator), vars(back[1]))
    scores = np.linspace(0, 8, 50)
    assert calibrator.transform(scores).tobytes() == back[1].transform(scores).tobytes()


def test_a_fitted_isolation_forest_scores_the_same() -> None:
    x = np.random.default_rng(1).normal(size=(300, 3))
    forest = IsolationForest(n_estimators=10, random_state=0).fit(x)
    back = loads(dumps(forest))
    assert back.score_samples(x).tobytes() == forest.score_samples(x).tobytes()
    assert dumps(back) == dumps(forest)  # the bytes, and so the checksum, depend on the model alone


def test_shared_and_cyclic_objects_stay_shared() -> None:
    array, window = np.zeros(3), Window(1, 2)
    loop: list[Any] = [window]
    loop.append(loop)
    window.tail = array
    back = loads(dumps({"x": array, "y": array, "loop": loop}))
    assert back["x"] is back["y"] is back["loop"][0].tail
    assert back["loop"][1] is back["loop"]


def test_every_allowed_name_is_the_class_it_names() -> None:
    for name in ALLOWED_CLASSES:
        module, _, attr = name.rpartition(".")
        cls = getattr(importlib.import_module(module), attr)
        assert f"{cls.__module__}.{cls.__qualname__}" == name


class _NotAllowed:
    pass


class _SubWindow(Window):
    pass


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (_NotAllowed(), "test_modelfile._NotAllowed at root: not an allowed class"),
        (_SubWindow(1, 2), "_SubWindow at root: not an allowed class"),
        ({"f": len}, r"builtin_function_or_method at root\['f'\]"),
        ([np.array([1, "a"], dtype=object)], r"array at root\[0\]: dtype object"),
        (np.array(["2026-01-05"], dtype="M8[s]"), "dtype datetime64"),
        (np.zeros(2, dtype=[("o", object)]), "dtype"),
        (np.array(["a"]), "dtype <U1"),
        ({1, 2}, "set at root"),
        (pd.Series([1.0]), "Series at root"),
        (pd.RangeIndex(3), "RangeIndex at root"),
        (pd.Timestamp("2026-01-05", tz="Europe/Paris"), "time zone Europe/Paris"),
        (pd.DataFrame({"a": [1.0], "b": [1]}), "mixed dtypes"),
        (pd.Index([1, 2], dtype="Int64"), "dtype Int64"),
        (np.ma.masked_array([1.0]), "MaskedArray"),
    ],
    ids=lambda v: type(v).__name__,
)
def test_anything_else_is_refused_when_saving(value: Any, reason: str) -> None:
    with pytest.raises(ModelFileError, match=reason):
        dumps(value)


# -- crafted files -------------------------------------------------------------------------------
class _Touch:
    """Unpickling this creates a file: proof of whether anything was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def _archive(
    root: Any, arrays: dict[str, np.ndarray] | None = None, raw: bytes = b"", **zip_kw: Any
) -> bytes:
    """A model file with this tree (or ``raw`` JSON), written by hand as an attacker would."""
    tree = raw or json.dumps({"format": FORMAT, "root": root}).encode()
    members = {"tree": np.frombuffer(tree, dtype=np.uint8), **(arrays or {})}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", **zip_kw) as zf:
        for name, array in members.items():
            with zf.open(f"{name}.npy", "w") as fh:
                np.lib.format.write_array(fh, array, allow_pickle=True)
    return buf.getvalue()


def _command(marker: Path) -> str:
    return f"touch {marker}"


@pytest.mark.parametrize("name", ["posix.system", "os.system", "builtins.eval", "subprocess.run"])
def test_a_file_naming_a_function_is_refused_before_anything_runs(
    tmp_path: Path, name: str
) -> None:
    marker = tmp_path / "ran"
    payload = {"$": "object", "id": 0, "class": name, "state": _command(marker)}
    for root in (payload, {"$": "list", "id": 1, "items": [1, payload]}):
        with pytest.raises(ModelFileError, match=f"invalid class '{name}'"):
            loads(_archive(root))
    assert not marker.exists()
    os.system(_command(marker))  # the same command, run, leaves its mark
    assert marker.exists()


def test_pickled_bytes_and_object_arrays_are_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    evil = np.array([_Touch(marker)], dtype=object)
    with pytest.raises(ModelFileError, match="not a model file"):
        loads(pickle.dumps(_Touch(marker)))
    with pytest.raises(ModelFileError, match="allow_pickle=False"):
        loads(_archive({"$": "array", "id": 0, "data": "a0"}, {"a0": evil}))
    assert not marker.exists()


@pytest.mark.parametrize(
    ("root", "reason"),
    [
        ({"$": "eval", "id": 0}, "not a model-file node"),
        ({"$": "list", "items": []}, "holds exactly"),
        ({"$": "list", "id": 0, "items": [{"$": "ref", "id": 5}]}, "reference to id 5"),
        ({"$": "list", "id": 0, "items": [{"$": "list", "id": 0, "items": []}]}, "used twice"),
        ({"$": "array", "id": 0, "data": "a9"}, "invalid data 'a9'"),
        ({"$": "dict", "id": 0, "items": [[[], 1]]}, "not a model-file node"),
        ({"$": "dict", "id": 0, "items": [[1]]}, r"not a \[key, value\] pair"),
        ({"$": "float", "value": "1e999"}, "invalid value '1e999'"),
        ({"$": "tuple", "items": "abc"}, "invalid items 'abc'"),
        ({"$": "timestamp", "value": 0, "unit": "us", "tz": "Europe/Paris"}, "invalid tz"),
        ({"$": "object", "id": 0, "class": "detector.core.features.Window", "state": 1}, "state"),
    ],
)
def test_malformed_trees_are_refused(root: Any, reason: str) -> None:
    with pytest.raises(ModelFileError, match=reason):
        loads(_archive(root))


def test_archives_other_than_ours_are_refused() -> None:
    good = {"$": "list", "id": 0, "items": []}
    assert loads(_archive(good)) == []
    with pytest.raises(ModelFileError, match="unexpected archive members"):
        loads(_archive(good, compression=zipfile.ZIP_DEFLATED))
    with pytest.raises(ModelFileError, match="unexpected archive members"):
        loads(_archive(good, {"../x": np.zeros(1)}))
    with pytest.raises(ModelFileError, match="holds NaN"):
        loads(_archive(None, raw=f'{{"format": "{FORMAT}", "root": NaN}}'.encode()))
    with pytest.raises(ModelFileError, match="not a llmwatch-model/1 file"):
        loads(_archive(None, raw=b'{"format": "llmwatch-model/99", "root": null}'))


def _forest_file() -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    x = np.random.default_rng(2).normal(size=(100, 2))
    with np.load(io.BytesIO(dumps(IsolationForest(n_estimators=1).fit(x)))) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return json.loads(arrays.pop("tree").tobytes())["root"], arrays


@pytest.mark.parametrize(
    ("field", "value"),
    [("left_child", 10**6), ("left_child", 0), ("right_child", -1), ("feature", 7)],
)
def test_a_tree_whose_nodes_point_out_of_bounds_is_refused(field: str, value: int) -> None:
    root, arrays = _forest_file()
    loads(_archive(root, arrays))
    nodes = next(k for k, a in arrays.items() if a.dtype.names)
    arrays[nodes] = arrays[nodes].copy()
    arrays[nodes][field][0] = value
    with pytest.raises(ModelFileError, match="decision tree"):
        loads(_archive(root, arrays))
