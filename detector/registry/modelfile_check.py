"""What a model file may hold, checked before :func:`detector.registry.modelfile.loads` builds
anything.

The class allowlist, the schema every node of the JSON tree must follow (:func:`check_nodes`), and
the structure of a scikit-learn decision tree, whose compiled code trusts the indices it is given
(:func:`check_decision_tree`). :mod:`detector.registry.modelfile` writes and reads the format and
re-exports :data:`ALLOWED_CLASSES` and :class:`ModelFileError`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ALLOWED_CLASSES", "ModelFileError", "check_decision_tree", "check_nodes"]


class ModelFileError(ValueError):
    """An object cannot be stored, or a file is not a model file this version can load."""


# Fully-qualified class name -> how an instance is taken apart and rebuilt: "object" (restore
# ``__dict__`` onto ``object.__new__(cls)``), "estimator" (scikit-learn ``__getstate__`` and
# ``__setstate__``) or "tree" (``Tree(*args)`` then ``__setstate__``, as its ``__reduce__`` says).
# These are the classes inside a fitted ``detector.service.training.SignalModel`` of every family.
ALLOWED_CLASSES: dict[str, str] = {
    "detector.core.calibration.CalibratorBank": "object",
    "detector.core.calibration.TailCalibrator": "object",
    "detector.core.ensemble.Ensemble": "object",
    "detector.core.features.Window": "object",
    "detector.core.hysteresis.HysteresisGroup": "object",
    "detector.core.load.LoadAdjustment": "object",
    "detector.core.load.LoadModel": "object",
    "detector.core.families.counts.CountColumns": "object",
    "detector.core.families.deviation.SeasonalDeviation": "object",
    "detector.core.families.iforest.IsolationForestDetector": "object",
    "detector.core.families.levelshift.LevelShiftDetector": "object",
    "detector.core.families.decomposition.Decomposition": "object",
    "detector.core.families.seasonal.SeasonalBaseline": "object",
    "detector.core.families.seasonal_models.StackedModels": "object",
    "detector.core.families.seasonal_models._Profiles": "object",
    "detector.core.families.sustained.SustainedShift": "object",
    "detector.service.training.SignalModel": "object",
    "detector.core.refractory.Refractory": "object",
    "detector.core.smoothing.Tracks": "object",
    "sklearn.ensemble._iforest.IsolationForest": "estimator",
    "sklearn.tree._classes.ExtraTreeRegressor": "estimator",
    "sklearn.tree._tree.Tree": "tree",
}

_UNITS = ("s", "ms", "us", "ns")
_NONFINITE = ("nan", "inf", "-inf")
_TZ = (None, "UTC")
# Node tag -> its fields and what each holds (a kind of value, or a tuple of the values allowed);
# the whole tree is checked against this before anything is built.
_FIELDS: dict[str, dict[str, Any]] = {
    "float": {"value": _NONFINITE},
    "tuple": {"items": "nodes"},
    "list": {"id": "id", "items": "nodes"},
    "dict": {"id": "id", "items": "pairs"},
    "ref": {"id": "id"},
    "array": {"id": "id", "data": "member"},
    "scalar": {"data": "member"},
    "timestamp": {"value": "int", "unit": _UNITS, "tz": _TZ},
    "datetimeindex": {
        "id": "id",
        "data": "member",
        "unit": _UNITS,
        "tz": _TZ,
        "freq": "freq",
        "name": "node",
    },
    "index": {"id": "id", "data": "node", "dtype": (None, "str", "object"), "name": "node"},
    "multiindex": {"id": "id", "levels": "nodes", "codes": "nodes", "names": "nodes"},
    "dataframe": {"id": "id", "index": "node", "columns": "node", "values": "node"},
    "object": {"id": "id", "class": tuple(ALLOWED_CLASSES), "state": "node"},
}


def check_nodes(node: Any, members: set[str], ids: set[int], path: str) -> None:
    """Raise unless ``node`` is a well-formed tree that names only allowed classes."""
    if node is None or type(node) in (bool, int, float, str):
        return
    if type(node) is not dict or node.get("$") not in _FIELDS:
        raise ModelFileError(f"{path}: not a model-file node")
    fields = _FIELDS[node["$"]]
    if node.keys() != {"$", *fields}:
        raise ModelFileError(f"{path}: a {node['$']} node holds exactly {sorted(fields)}")
    for field, what in fields.items():
        value, where = node[field], f"{path}.{field}"
        if what == "node":
            check_nodes(value, members, ids, where)
        elif what in ("nodes", "pairs") and type(value) is list:
            for i, item in enumerate(value):
                if what == "pairs" and not (type(item) is list and len(item) == 2):
                    raise ModelFileError(f"{where}[{i}]: not a [key, value] pair")
                for part in item if what == "pairs" else [item]:
                    check_nodes(part, members, ids, f"{where}[{i}]")
        elif not _valid(what, value, members):
            raise ModelFileError(f"{where}: invalid {field} {value!r}"[:300])
        if what == "id" and node["$"] != "ref":
            if value in ids:
                raise ModelFileError(f"{where}: id {value} is used twice")
            ids.add(value)


def _valid(what: Any, value: Any, members: set[str]) -> bool:
    if what in ("id", "int"):
        return type(value) is int and (what == "int" or value >= 0)
    if value is not None and type(value) is not str:  # so unhashable values are never looked up
        return False
    if what in ("freq", "member"):
        return what == "freq" or value in members
    return type(what) is tuple and value in what


def check_decision_tree(args: Any, state: Any) -> None:
    """Refuse a tree whose indices would make scikit-learn's compiled code read out of bounds.

    scikit-learn trusts a tree's state: a child or feature index out of range, a cycle, or a
    depth beyond ``max_depth`` (it sizes buffers by it) would read or write past its arrays.
    """
    n_features, n_classes, n_outputs = args
    nodes, fields = state["nodes"], ("left_child", "right_child", "feature")
    ok = type(n_features) is int and type(n_outputs) is int and type(n_classes) is np.ndarray
    ok = ok and n_features >= 1 and n_classes.dtype.kind == "i" and n_classes.shape == (n_outputs,)
    ok = ok and type(nodes) is np.ndarray and nodes.ndim == 1 and nodes.size >= 1
    if not ok or state["node_count"] != nodes.size or not set(fields) <= set(nodes.dtype.names):
        raise ModelFileError("a decision tree's arguments or nodes are malformed")
    left, right, feature = (nodes[k].astype(np.int64) for k in fields)
    inner = left != -1
    own = np.flatnonzero(inner)
    children = np.concatenate([left[inner], right[inner]])
    # Every node but the root has exactly one parent, and children come after their parent.
    shaped = (
        np.array_equal(inner, right != -1)
        and np.all((feature[inner] >= 0) & (feature[inner] < n_features))
        and np.all((left[inner] > own) & (right[inner] > own))
        and np.array_equal(np.sort(children), np.arange(1, nodes.size))
    )
    level, depth = np.array([0]), -1
    while shaped and level.size:
        depth += 1
        level = level[inner[level]]
        level = np.concatenate([left[level], right[level]])
    if not shaped or not depth <= state["max_depth"] <= nodes.size:
        raise ModelFileError("a decision tree's nodes do not form a tree of its depth")
