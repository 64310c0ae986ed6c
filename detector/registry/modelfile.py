"""The model file: a fitted model as a JSON tree plus named numpy arrays, in one ``.npz``.

Loading a model file builds only what the format names: plain values, numpy arrays of numbers,
a few pandas types and instances of the classes in :data:`ALLOWED_CLASSES`; unlike a pickle, it
cannot make the loader call anything else. :func:`dumps` refuses what it cannot represent, and
:func:`loads` refuses a file that names anything else before it builds any object (the allowlist
and those checks are :mod:`detector.registry.modelfile_check`'s).

The file is an uncompressed zip as numpy writes it (``.npz``, read with ``allow_pickle=False``,
its comment :data:`FORMAT`): ``tree.npy`` holds the UTF-8 JSON of the object graph as a ``uint8``
array, and ``a0.npy``, ``a1.npy`` and so on hold the arrays the tree names. JSON null, booleans,
integers, finite floats and strings stand for themselves; any other value is a JSON object whose
``"$"`` says what it is:

- ``float`` (NaN and infinities), ``tuple``, ``list`` and ``dict`` (items as ``[key, value]``
  pairs, so keys may be numbers or tuples);
- ``array`` (its ``data`` names the member) and ``scalar`` (a numpy scalar, as a 0-d array);
- ``timestamp``, ``datetimeindex``, ``index``, ``multiindex`` and ``dataframe`` (pandas);
- ``object``: an instance of an allowed class, its ``state`` being the instance's ``__dict__``,
  a scikit-learn estimator's ``__getstate__()``, or a tree's constructor arguments and state;
- ``ref``: the object tagged with the same ``id`` earlier, so shared objects stay shared.

Examples
--------
>>> blob = dumps({"mean": np.arange(3.0), ("a", 1): [None, float("nan")]})
>>> loads(blob)
{'mean': array([0., 1., 2.]), ('a', 1): [None, nan]}
>>> try:
...     dumps(object())
... except ModelFileError as exc:
...     print(exc)
cannot store builtins.object at root: not an allowed class
"""

from __future__ import annotations

import importlib
import io
import json
import math
import re
import zipfile
from typing import Any

import numpy as np
import pandas as pd

from detector.registry.modelfile_check import (
    ALLOWED_CLASSES,
    ModelFileError,
    check_decision_tree,
    check_nodes,
)

__all__ = ["ALLOWED_CLASSES", "FORMAT", "ModelFileError", "dumps", "loads"]

FORMAT = "llmwatch-model/1"

_TREE = "tree"
_MEMBER = re.compile(r"(tree|a\d{1,9})\.npy")


def _resolve(name: str) -> type:
    # Only names from ALLOWED_CLASSES get here, so only their modules are ever imported.
    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def _plain_dtype(dtype: np.dtype) -> bool:
    """Numbers, booleans, or records of them: dtypes whose bytes are all there is."""
    if dtype.fields is not None:
        return not dtype.hasobject
    return dtype.kind in "biufc"


# -- writing ------------------------------------------------------------------------------------
class _Writer:
    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self._ids: dict[int, int] = {}
        # Temporaries (a state dict, a frame's values) must outlive the walk: a freed object's id
        # could be reused by the next one, which would then be written as a reference to it.
        self._alive: list[Any] = []

    def node(self, obj: Any, path: str) -> Any:
        kind = type(obj)
        if obj is None or kind in (bool, int, str):
            return obj
        if kind is float:
            return obj if math.isfinite(obj) else {"$": "float", "value": repr(obj)}
        if kind is tuple:
            return {"$": "tuple", "items": self._items(obj, path)}
        if isinstance(obj, np.generic):
            return {"$": "scalar", "data": self._member(np.asarray(obj), path)}
        if kind is pd.Timestamp:
            stamp, tz = int(obj.asm8.view("i8")), self._tz(obj.tz, path)
            return {"$": "timestamp", "value": stamp, "unit": obj.unit, "tz": tz}
        if id(obj) in self._ids:
            return {"$": "ref", "id": self._ids[id(obj)]}
        # Numbered before its parts are written, so that they may refer back to it.
        ident = self._ids[id(obj)] = len(self._ids)
        self._alive.append(obj)
        return {**self._parts(obj, kind, path), "id": ident}

    def _items(self, items: Any, path: str) -> list[Any]:
        return [self.node(x, f"{path}[{i}]") for i, x in enumerate(items)]

    def _parts(self, obj: Any, kind: type, path: str) -> dict[str, Any]:
        if kind is list:
            return {"$": "list", "items": self._items(obj, path)}
        if kind is dict:
            items = [[self.node(k, path), self.node(v, f"{path}[{k!r}]")] for k, v in obj.items()]
            return {"$": "dict", "items": items}
        if kind is np.ndarray:
            return {"$": "array", "data": self._member(obj, path)}
        if kind is pd.DatetimeIndex:
            return {
                "$": "datetimeindex",
                "data": self._member(obj.asi8, path),
                "unit": obj.unit,
                "tz": self._tz(obj.tz, path),
                "freq": obj.freqstr,
                "name": self.node(obj.name, f"{path}.name"),
            }
        if kind is pd.MultiIndex:
            return {
                "$": "multiindex",
                "levels": self._items(obj.levels, f"{path}.levels"),
                "codes": self._items(map(np.asarray, obj.codes), f"{path}.codes"),
                "names": self._items(obj.names, f"{path}.names"),
            }
        if kind is pd.Index:
            return self._index(obj, path)
        if kind is pd.DataFrame:
            if obj.attrs or len(set(obj.dtypes)) > 1:
                raise ModelFileError(f"cannot store the DataFrame at {path}: attrs or mixed dtypes")
            return {
                "$": "dataframe",
                "index": self.node(obj.index, f"{path}.index"),
                "columns": self.node(obj.columns, f"{path}.columns"),
                "values": self.node(obj.to_numpy(), f"{path}.values"),
            }
        name = f"{kind.__module__}.{kind.__qualname__}"
        how = ALLOWED_CLASSES.get(name)
        if how is None or _resolve(name) is not kind:
            raise ModelFileError(f"cannot store {name} at {path}: not an allowed class")
        if how == "object":
            state = vars(obj)
        elif how == "estimator":
            state = obj.__getstate__()
        else:
            _, args, state = obj.__reduce__()
            state = (args, state)
        return {"$": "object", "class": name, "state": self.node(state, path)}

    def _index(self, obj: pd.Index, path: str) -> dict[str, Any]:
        name = self.node(obj.name, f"{path}.name")
        if isinstance(obj.dtype, np.dtype) and obj.dtype.kind in "biuf":
            data, dtype = self.node(obj.to_numpy(), path), None
        elif str(obj.dtype) in ("str", "object"):
            data, dtype = self.node(list(obj), path), str(obj.dtype)
        else:
            raise ModelFileError(f"cannot store the Index at {path}: dtype {obj.dtype}")
        return {"$": "index", "data": data, "dtype": dtype, "name": name}

    def _member(self, array: np.ndarray, path: str) -> str:
        if not _plain_dtype(array.dtype):
            raise ModelFileError(f"cannot store the array at {path}: dtype {array.dtype}")
        if array.dtype.names:  # records: copied field by field, so padding bytes are zeros
            array, fields = np.zeros(array.shape, array.dtype), array
            for field in array.dtype.names:
                array[field] = fields[field]
        name = f"a{len(self.arrays)}"
        self.arrays[name] = array
        return name

    @staticmethod
    def _tz(tz: Any, path: str) -> str | None:
        if tz is not None and str(tz) != "UTC":
            raise ModelFileError(f"cannot store time zone {tz} at {path}: only naive or UTC times")
        return None if tz is None else "UTC"


def dumps(obj: Any) -> bytes:
    """The model file of ``obj``; :class:`ModelFileError` names the first part it cannot store."""
    writer = _Writer()
    root = writer.node(obj, "root")
    tree = json.dumps({"format": FORMAT, "root": root}, allow_nan=False, separators=(",", ":"))
    members = {_TREE: np.frombuffer(tree.encode(), dtype=np.uint8), **writer.arrays}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.comment = FORMAT.encode()  # names the format to `unzip -z`; the tree says it again
        for name, array in members.items():
            # A fixed date makes the bytes, and so the checksum, depend on the model alone.
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(array), allow_pickle=False)
    return buf.getvalue()


# -- reading ------------------------------------------------------------------------------------
class _Reader:
    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays
        self.objects: dict[int, Any] = {}

    def build(self, node: Any) -> Any:
        if type(node) is not dict:
            return node
        tag = node["$"]
        if tag == "float":
            return float(node["value"])
        if tag == "tuple":
            return tuple(self.build(x) for x in node["items"])
        if tag == "scalar":
            return self.arrays[node["data"]][()]
        if tag == "timestamp":
            return self._utc(pd.Timestamp(np.datetime64(node["value"], node["unit"])), node["tz"])
        if tag == "ref":
            if node["id"] not in self.objects:
                raise ModelFileError(f"reference to id {node['id']} before it is complete")
            return self.objects[node["id"]]
        if tag == "list":
            out: Any = self._keep(node, [])
            out.extend(self.build(x) for x in node["items"])
        elif tag == "dict":
            out = self._keep(node, {})
            for key, value in node["items"]:
                out[self.build(key)] = self.build(value)
        elif tag == "object":
            out = self._instance(node)
        else:
            out = self._keep(node, self._pandas_or_array(node))
        return out

    def _keep(self, node: dict[str, Any], obj: Any) -> Any:
        self.objects[node["id"]] = obj
        return obj

    def _pandas_or_array(self, node: dict[str, Any]) -> Any:
        tag = node["$"]
        if tag == "array":
            return self.arrays[node["data"]]
        if tag == "datetimeindex":
            values = self.arrays[node["data"]].astype(np.int64).view(f"M8[{node['unit']}]")
            index = pd.DatetimeIndex(values, freq=node["freq"], name=self.build(node["name"]))
            return self._utc(index, node["tz"])
        if tag == "index":
            data, name = self.build(node["data"]), self.build(node["name"])
            if node["dtype"] == "object":
                return pd.Index(data, dtype=object, name=name, tupleize_cols=False)
            return pd.Index(data, dtype=node["dtype"], name=name)
        if tag == "multiindex":
            levels, codes, names = (
                [self.build(x) for x in node[k]] for k in ("levels", "codes", "names")
            )
            return pd.MultiIndex(levels=levels, codes=codes, names=names, verify_integrity=True)
        index, columns = self.build(node["index"]), self.build(node["columns"])
        return pd.DataFrame(self.build(node["values"]), index=index, columns=columns)

    def _instance(self, node: dict[str, Any]) -> Any:
        cls, how = _resolve(node["class"]), ALLOWED_CLASSES[node["class"]]
        if how == "tree":
            args, state = self.build(node["state"])
            check_decision_tree(args, state)
            return self._keep(node, _set_state(cls(*args), state))
        # Registered before its state is built, so that the state may refer back to it.
        obj = self._keep(node, object.__new__(cls))
        state = self.build(node["state"])
        if type(state) is not dict or not all(type(k) is str for k in state):
            raise ModelFileError(f"the state of a {node['class']} is not a dict of attributes")
        if how == "estimator":
            return _set_state(obj, state)
        obj.__dict__.update(state)
        return obj

    @staticmethod
    def _utc(value: Any, tz: str | None) -> Any:
        return value if tz is None else value.tz_localize(tz)


def _set_state(obj: Any, state: dict[str, Any]) -> Any:
    obj.__setstate__(state)
    return obj


def _members(blob: bytes) -> dict[str, np.ndarray]:
    if not blob.startswith(b"PK\x03\x04"):
        raise ModelFileError("not a model file (expected an .npz archive)")
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        names = npz.zip.namelist()
        # Stored members only: nothing inflates beyond the file's own size.
        stored = all(i.compress_type == zipfile.ZIP_STORED for i in npz.zip.infolist())
        if not stored or not all(map(_MEMBER.fullmatch, names)) or len(set(names)) < len(names):
            raise ModelFileError(f"unexpected archive members: {sorted(names)[:8]}")
        return {name: npz[name] for name in npz.files}


def loads(blob: bytes) -> Any:
    """The object a model file holds; :class:`ModelFileError` if the file is refused.

    The whole tree is checked (tags, fields, class names, array names) before any object is
    built; arrays are read with ``allow_pickle=False``.
    """
    try:
        arrays = _members(blob)
        tree = arrays.pop(_TREE, None)
        if tree is None or tree.dtype != np.uint8 or tree.ndim != 1:
            raise ModelFileError("the tree member is not a byte array")
        doc = json.loads(tree.tobytes().decode(), parse_constant=_no_constant)
        if type(doc) is not dict or doc.keys() != {"format", "root"} or doc["format"] != FORMAT:
            raise ModelFileError(f"not a {FORMAT} file")
        for name, array in arrays.items():
            if not _plain_dtype(array.dtype):
                raise ModelFileError(f"array {name} has dtype {array.dtype}")
        check_nodes(doc["root"], set(arrays), set(), "root")
        return _Reader(arrays).build(doc["root"])
    except ModelFileError:
        raise
    # A crafted file can make numpy, pandas or scikit-learn raise almost anything while the checked
    # tree is turned into objects; whatever it is, the file is refused.
    except Exception as exc:
        raise ModelFileError(f"unreadable model file: {type(exc).__name__}: {exc}") from exc


def _no_constant(name: str) -> Any:
    raise ModelFileError(f"the tree holds {name}, which JSON does not allow")
