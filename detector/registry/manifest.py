"""The JSON manifest stored beside every model artifact, and the checks made on it before loading.

A manifest records what the artifact is (signal, version, artifact file, its size and sha256), how
it was made (training window, a hash of the training data, parameters) and with what (library
versions), plus any evaluation figures. :mod:`detector.registry.store` writes and reads it; nothing
here touches the artifact itself. The artifact is a :mod:`detector.registry.modelfile` file
(``model.npz``);
versions whose artifact is a pickle (``model.pkl``, written by llmwatch before it) are refused by
name (:func:`artifact_problem`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import platform
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "ARTIFACT_NAME",
    "LIBRARIES",
    "MANIFEST_FORMAT",
    "ModelVersion",
    "RegistryError",
    "TimeLike",
    "artifact_problem",
    "check_name",
    "data_hash",
    "library_mismatches",
    "library_versions",
    "parse_manifest",
    "to_json",
    "to_timestamp",
]

MANIFEST_FORMAT = 1
ARTIFACT_NAME = "model.npz"
LIBRARIES = ("python", "numpy", "pandas", "scikit-learn", "statsmodels", "llmwatch")
# Signal (or group) names become folder names: letters, digits and a few separators (colons for
# recording-rule names), never a leading dot, so no name can climb out of the registry root.
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$")
_REQUIRED = (
    "format",
    "signal",
    "version",
    "created_at",
    "training_start",
    "training_end",
    "data_hash",
    "params",
    "libraries",
    "evaluation",
    "artifact",
)


class RegistryError(Exception):
    """A model version cannot be published, found or loaded; the message says why."""


def check_name(kind: str, name: str, pattern: re.Pattern[str] = _NAME) -> str:
    """Return ``name`` if it is safe as a folder name, else raise :class:`RegistryError`.

    >>> check_name("signal", "llm:latency_p95:5m")
    'llm:latency_p95:5m'
    """
    if not isinstance(name, str) or not pattern.fullmatch(name) or ".." in name:
        raise RegistryError(
            f"invalid {kind} name {name!r}: use 1-128 letters, digits, '_', '-', '.' or ':', "
            "not starting with '.'"
        )
    return name


TimeLike = float | str | datetime | date | pd.Timestamp


def to_timestamp(value: TimeLike) -> float:
    """Unix seconds of a datetime, a pandas Timestamp, an ISO-8601 string or a number.

    Naive datetimes are taken as UTC.

    >>> to_timestamp("1970-01-01T00:01:00Z"), to_timestamp(60)
    (60.0, 60.0)
    """
    if isinstance(value, bool):
        raise TypeError("a timestamp cannot be a bool")
    if isinstance(value, int | float | np.integer | np.floating):
        out = float(value)
    else:
        stamp = pd.Timestamp(value)
        if stamp is pd.NaT:
            raise ValueError(f"not a timestamp: {value!r}")
        if stamp.tzinfo is None:
            stamp = stamp.tz_localize("UTC")
        out = stamp.timestamp()
    if not math.isfinite(out):
        raise ValueError(f"not a finite timestamp: {value!r}")
    return out


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, datetime | date | pd.Timestamp):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def to_json(value: Any) -> str:
    """Indented JSON of a manifest (numpy scalars, datetimes and paths converted)."""
    return json.dumps(value, indent=2, sort_keys=True, default=_json_default, allow_nan=False)


def data_hash(frame: pd.DataFrame) -> str:
    """A sha256 of a frame's column names, timestamps and values, stable across runs.

    >>> idx = pd.date_range("2026-01-05", periods=3, freq="min")
    >>> a = pd.DataFrame({"x": [1.0, 2.0, 3.0]}, index=idx)
    >>> data_hash(a) == data_hash(a.copy()), data_hash(a) == data_hash(a + 1)
    (True, False)
    """
    digest = hashlib.sha256()
    digest.update(json.dumps([str(c) for c in frame.columns]).encode())
    index = frame.index
    if isinstance(index, pd.DatetimeIndex):
        if index.tz is not None:
            index = index.tz_convert("UTC").tz_localize(None)
        digest.update(np.ascontiguousarray(index.as_unit("ns").asi8, dtype="<i8").tobytes())
    else:
        digest.update(json.dumps([str(i) for i in index]).encode())
    values = frame.to_numpy(dtype=np.float64, na_value=np.nan)
    digest.update(np.ascontiguousarray(values, dtype="<f8").tobytes())
    return digest.hexdigest()


def _distribution_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def library_versions() -> dict[str, str | None]:
    """Versions of Python and of the libraries a stored model depends on (None: not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    out.update({name: _distribution_version(name) for name in LIBRARIES[1:]})
    return out


def _major_minor(text: str | None) -> tuple[str, str] | None:
    if not text:
        return None
    parts = re.split(r"[.+-]", text)
    return (parts[0], parts[1] if len(parts) > 1 else "0")


def library_mismatches(
    recorded: dict[str, str | None], running: dict[str, str | None]
) -> tuple[list[str], list[str]]:
    """Compare library versions: ``(refusals, warnings)`` as readable lines.

    A different major version refuses the model: the state of numpy, pandas or scikit-learn
    objects (a tree's node layout, say) is not kept compatible across such changes. A different
    minor version only warns (the model usually loads; scikit-learn itself would warn); patch
    releases are ignored. llmwatch's own 0.x minor releases change the fitted models' layout, so
    for llmwatch they refuse too. A library recorded or installed on one side only warns: if the
    model needs an absent module, loading fails and says so.

    >>> library_mismatches({"numpy": "2.3.1"}, {"numpy": "2.3.5"})
    ([], [])
    >>> library_mismatches({"numpy": "2.2.0"}, {"numpy": "2.3.5"})[1]
    ['numpy 2.2.0 (model) vs 2.3.5 (running)']
    >>> library_mismatches({"llmwatch": "0.1.0"}, {"llmwatch": "0.2.0"})[0]
    ['llmwatch 0.1.0 (model) vs 0.2.0 (running)']
    """
    refuse, warn = [], []
    for name in LIBRARIES:
        want, have = recorded.get(name), running.get(name)
        line = f"{name} {want} (model) vs {have} (running)"
        a, b = _major_minor(want), _major_minor(have)
        if a is None or b is None:
            if a != b:
                warn.append(line)
        elif a[0] != b[0] or (name == "llmwatch" and a[0] == "0" and a != b):
            refuse.append(line)
        elif a != b:
            warn.append(line)
    return refuse, warn


@dataclass(frozen=True, kw_only=True)
class ModelVersion:
    """One published model version, as its manifest describes it (times in unix seconds)."""

    signal: str
    version: str
    path: Path  # the version's folder
    created_at: float
    training_start: float
    training_end: float
    data_hash: str
    params: dict[str, Any]
    libraries: dict[str, str | None]
    artifact: str  # file name inside ``path``
    sha256: str
    size: int
    evaluation: dict[str, Any] = field(default_factory=dict)

    @property
    def artifact_path(self) -> Path:
        """Where the artifact file lies."""
        return self.path / self.artifact

    def manifest(self) -> dict[str, Any]:
        """The manifest as stored (JSON types)."""
        return {
            "format": MANIFEST_FORMAT,
            "signal": self.signal,
            "version": self.version,
            "created_at": _iso(self.created_at),
            "training_start": _iso(self.training_start),
            "training_end": _iso(self.training_end),
            "data_hash": self.data_hash,
            "params": self.params,
            "libraries": self.libraries,
            "evaluation": self.evaluation,
            "artifact": {"file": self.artifact, "sha256": self.sha256, "size": self.size},
        }


def artifact_problem(version: ModelVersion) -> str | None:
    """Why this llmwatch cannot load the version's artifact format, or None when it can.

    >>> v = ModelVersion(signal="rps", version="v", path=Path("rps/v"), created_at=0.0,
    ...                  training_start=0.0, training_end=0.0, data_hash="", params={},
    ...                  libraries={}, artifact="model.pkl", sha256="0" * 64, size=1)
    >>> artifact_problem(v).endswith("refit with llmwatch train")
    True
    """
    where = f"{version.signal}/{version.version}"
    if version.artifact == ARTIFACT_NAME:
        return None
    if version.artifact.endswith(".pkl"):
        return (
            f"{where}: the artifact {version.artifact!r} is a pickle written by an older "
            "llmwatch; pickles are no longer loaded, as loading one can run any code: "
            "refit with llmwatch train"
        )
    return f"{where}: unknown artifact format {version.artifact!r} (expected {ARTIFACT_NAME})"


def parse_manifest(data: Any, folder: Path) -> ModelVersion:
    """Check a parsed ``manifest.json`` and turn it into a :class:`ModelVersion`.

    Raises :class:`RegistryError` naming the first problem: a missing key, an unknown format, a
    signal or version that differs from the folder it sits in, or an artifact name with a path.
    """
    where = f"{folder}/manifest.json"
    if not isinstance(data, dict):
        raise RegistryError(f"{where}: not a JSON object")
    missing = [key for key in _REQUIRED if key not in data]
    if missing:
        raise RegistryError(f"{where}: missing keys {missing}")
    if data["format"] != MANIFEST_FORMAT:
        raise RegistryError(f"{where}: unknown manifest format {data['format']!r}")
    if data["signal"] != folder.parent.name or data["version"] != folder.name:
        raise RegistryError(
            f"{where}: names {data['signal']!r}/{data['version']!r} but lies in "
            f"{folder.parent.name}/{folder.name}"
        )
    artifact = data["artifact"]
    if not isinstance(artifact, dict) or set(artifact) != {"file", "sha256", "size"}:
        raise RegistryError(f"{where}: 'artifact' must hold exactly file, sha256 and size")
    name = artifact["file"]
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        raise RegistryError(f"{where}: artifact file {name!r} must be a plain file name")
    if not isinstance(artifact["sha256"], str) or not re.fullmatch(
        r"[0-9a-f]{64}", artifact["sha256"]
    ):
        raise RegistryError(f"{where}: artifact sha256 is not 64 hex digits")
    if not isinstance(artifact["size"], int) or artifact["size"] < 0:
        raise RegistryError(f"{where}: artifact size is not a non-negative integer")
    for key in ("params", "libraries", "evaluation"):
        if not isinstance(data[key], dict):
            raise RegistryError(f"{where}: {key!r} must be a JSON object")
    try:
        stamps = {
            k: to_timestamp(data[k]) for k in ("created_at", "training_start", "training_end")
        }
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"{where}: {exc}") from None
    return ModelVersion(
        signal=data["signal"],
        version=data["version"],
        path=folder,
        data_hash=str(data["data_hash"]),
        params=data["params"],
        libraries=data["libraries"],
        evaluation=data["evaluation"],
        artifact=name,
        sha256=artifact["sha256"],
        size=artifact["size"],
        **stamps,
    )
