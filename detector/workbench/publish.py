"""Publishing a chosen candidate to the model registry, checking the service took it, rolling back.

A published version is exactly what ``llmwatch train`` writes (a
:class:`~detector.service.training.SignalModel` under the service's registry name for the signal,
with the training window, data hash and parameters in its manifest) plus the candidate's name and
evaluation figures, so a running ``llmwatch detect`` verifies the checksum and swaps it in at its
next cycle. The service's own scheduled refits use ``configs/detector.yaml``:
:func:`config_snippet` gives the lines that keep the chosen settings past the next refit.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import yaml

from detector.registry.manifest import data_hash
from detector.registry.store import ModelRegistry, ModelVersion, RegistryError
from detector.service.config import DetectorSettings
from detector.service.training import (
    fit_signal_model,
    load_covariates,
    registry_name,
    trainable_columns,
)
from detector.workbench.candidates import Candidate
from detector.workbench.data import History

__all__ = [
    "check_publish_target",
    "config_snippet",
    "evaluation_figures",
    "publish_candidate",
    "rollback",
    "served_versions",
    "versions_table",
    "wait_until_served",
]


_SCENARIO_FIGURES = ("precision", "recall", "f1", "fa_per_day", "delay_min", "nab_standard")
_HISTORY_FIGURES = ("alerts_per_day", "share_above_enter", "p99_score")


def evaluation_figures(
    candidate: str,
    scenarios: pd.DataFrame,
    history: pd.DataFrame | None = None,
) -> dict[str, dict[str, float]]:
    """Figures to store with each signal's model: the candidate's scenario totals, and the
    signal's own replay on recent history (``scenarios_*`` and ``history_*`` keys; NaN left out).

    ``scenarios`` is :func:`~detector.workbench.candidates.evaluation_table`'s output, ``history``
    :func:`~detector.workbench.candidates.history_table`'s; the result maps signal -> figures
    (key ``"*"`` holds the scenario figures alone, for signals the history table lacks).
    """
    row = scenarios.loc[candidate]
    common = {f"scenarios_{k}": float(row[k]) for k in _SCENARIO_FIGURES if pd.notna(row[k])}
    out = {"*": common}
    if history is not None and candidate in history.index.get_level_values(0):
        for signal, figures in history.loc[candidate].iterrows():
            if signal == "ALL":
                continue
            own = {
                f"history_{k}": float(figures[k]) for k in _HISTORY_FIGURES if pd.notna(figures[k])
            }
            out[str(signal)] = {**common, **own}
    return out


def publish_candidate(
    registry: ModelRegistry,
    settings: DetectorSettings,
    history: History,
    candidate: Candidate,
    *,
    evaluation: Mapping[str, Mapping[str, float]] | None = None,
) -> dict[str, ModelVersion]:
    """Fit ``candidate`` on each signal's history and publish it; returns the new versions.

    Only the series this replica owns (``settings.shard``) and that have enough history are
    fitted, as the service does. ``evaluation`` maps a signal (or ``"*"``, any signal) to the
    figures stored in its manifest and shown by ``GET /api/v1/models``
    (:func:`evaluation_figures`). Signals with nothing to fit are skipped.
    """
    owner = settings.shard_spec
    published = {}
    for name, batch in history.items():
        signal = candidate.apply(settings.signal(name))
        frame = batch.frame
        frame = frame[[c for c in frame.columns if owner.owns(name, batch.labels[c])]]
        columns = trainable_columns(frame, settings.min_train_points, settings.min_train_span)
        if not columns:
            continue
        frame = frame[columns]
        # Latencies are fitted at the load of their rows, as the service fits them.
        loads = {n: history[n].frame for n in settings.load_signals(name) if n in history}
        model = fit_signal_model(frame, signal, batch.labels, None, load_covariates(frame, loads))
        figures = (evaluation or {}).get(name) or (evaluation or {}).get("*") or {}
        model.evaluation = {k: float(v) for k, v in figures.items()}
        published[name] = registry.publish(
            registry_name(name, owner),
            model,
            training_start=model.training_start,
            training_end=model.training_end,
            data_hash=data_hash(frame),
            params={
                **model.params,
                "series": len(columns),
                "shard": str(owner),
                "candidate": candidate.name,
            },
            evaluation=model.evaluation,
        )
    return published


def _utc(ts: float) -> pd.Timestamp:
    return pd.Timestamp(datetime.fromtimestamp(ts, tz=UTC))


def versions_table(
    registry: ModelRegistry, settings: DetectorSettings, names: Iterable[str] | None = None
) -> pd.DataFrame:
    """Every version of the named signals' models (all configured by default), with status.

    ``verified`` re-hashes the artifact against its manifest; ``current`` marks what the service
    serves; ``pinned`` marks a rollback pointer. The registry folder of a signal is that of this
    replica (``settings.shard``).
    """
    rows = []
    for name in [s.name for s in settings.signals] if names is None else list(names):
        folder = registry_name(name, settings.shard_spec)
        current, pin = registry.current(folder), registry.pinned(folder)
        for v in registry.versions(folder):
            try:
                registry.verify(v)
                verified = True
            except RegistryError:
                verified = False
            rows.append(
                {
                    "signal": name,
                    "version": v.version,
                    "created": _utc(v.created_at),
                    "training_start": _utc(v.training_start),
                    "training_end": _utc(v.training_end),
                    "candidate": v.params.get("candidate", ""),
                    "sha256": v.sha256[:12],
                    "verified": verified,
                    "current": current is not None and v.version == current.version,
                    "pinned": v.version == pin,
                }
            )
    columns = [
        "signal",
        "version",
        "created",
        "training_start",
        "training_end",
        "candidate",
        "sha256",
        "verified",
        "current",
        "pinned",
    ]
    return pd.DataFrame(rows, columns=columns).set_index(["signal", "version"])


def rollback(
    registry: ModelRegistry,
    settings: DetectorSettings,
    names: Iterable[str],
    version: str | None = None,
) -> dict[str, ModelVersion]:
    """Serve the version before the current one of each signal (or ``version``) from now on.

    The same as ``llmwatch models rollback SIGNAL [VERSION]``; the next publish supersedes it.
    Returns signal -> the version now current.
    """
    return {
        name: registry.rollback(registry_name(name, settings.shard_spec), version) for name in names
    }


def _models(api_url: str, timeout: float) -> dict[str, Any]:
    url = f"{api_url.rstrip('/')}/api/v1/models"
    try:
        response = httpx.get(url, timeout=timeout)
        response.raise_for_status()
        return response.json()
    except httpx.HTTPError as exc:
        raise ConnectionError(
            f"the detector at {api_url} does not answer {url} ({type(exc).__name__}: {exc}); "
            "start it (`make demo`), set API_URL, or WAIT_FOR_SERVICE_S = 0 to skip the wait"
        ) from exc


def served_versions(api_url: str, *, timeout: float = 5.0) -> dict[str, str | None]:
    """Signal -> model version a running service serves (``GET /api/v1/models``).

    Raises ``ConnectionError`` naming the URL when the service cannot be reached.
    """
    return {m["signal"]: m["version"] for m in _models(api_url, timeout)["data"]}


def check_publish_target(
    registry: ModelRegistry, api_url: str | None, *, timeout: float = 5.0
) -> str:
    """Check, before anything is published, that the registry exists and (with ``api_url``)
    that the running service answers and reads that registry; returns what was checked.

    Raises ``FileNotFoundError`` or ``ConnectionError``, each naming the path or URL and the
    parameter to change.
    """
    root = Path(registry.root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(
            f"registry root {root} does not exist: set REGISTRY_ROOT to the registry the "
            "service reads (`llmwatch models list` shows it)"
        )
    if not api_url:
        return f"registry {root} (no service checked)"
    served = _models(api_url, timeout).get("registry_root")
    if served is not None and Path(served).resolve() != root:
        raise ConnectionError(
            f"the detector at {api_url} reads the registry {served}, not {root}: set "
            "REGISTRY_ROOT to it, or API_URL to the service that reads this one"
        )
    return f"registry {root}, read by the detector at {api_url}"


def wait_until_served(
    api_url: str,
    expected: Mapping[str, str | ModelVersion],
    *,
    timeout: float = 60.0,
    poll: float = 1.0,
) -> dict[str, bool]:
    """Poll the service until it serves every ``signal -> version`` of ``expected``, or time out.

    ``expected`` maps signals to version ids or :class:`ModelVersion` (what
    :func:`publish_candidate` and :func:`rollback` return).

    Returns, per signal, whether it serves the expected version at the end. The service looks at
    the registry once per cycle (``interval``), so allow a cycle or two.
    """
    wanted = {k: v.version if isinstance(v, ModelVersion) else v for k, v in expected.items()}
    deadline = time.monotonic() + timeout
    while True:
        served = served_versions(api_url)
        done = {name: served.get(name) == version for name, version in wanted.items()}
        if all(done.values()) or time.monotonic() >= deadline:
            return done
        time.sleep(poll)


def config_snippet(settings: DetectorSettings, candidate: Candidate, names: Iterable[str]) -> str:
    """YAML of the named signals with ``candidate`` applied, for ``signals:`` in the config."""
    entries: list[dict[str, Any]] = []
    for name in names:
        signal = candidate.apply(settings.signal(name))
        entry = signal.model_dump(mode="json")
        entry["detectors"] = list(signal.detectors)
        entries.append(entry)
    return yaml.safe_dump({"signals": entries}, sort_keys=False)
