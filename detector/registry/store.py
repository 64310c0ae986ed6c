"""The model registry: versioned, checksummed model artifacts in plain folders.

Layout (the root is ``models/`` by default)::

    <root>/<signal-or-group>/<version>/manifest.json   what, when, from which data, with what
    <root>/<signal-or-group>/<version>/model.npz       the fitted object (.modelfile)
    <root>/<signal-or-group>/CURRENT                   optional rollback pointer (JSON)
    <root>/.staging/                                   versions being written or removed

A version is written completely into ``.staging`` and then renamed into place, so a reader sees
either nothing or the whole version. Version ids sort by creation time. The current version is the
newest one unless a rollback pointer names another; publishing a new version clears the pointer,
so a rollback lasts until the next model is published. :mod:`detector.registry.hygiene` keeps
``.staging`` and prunes old versions; ``models/README.md`` tells the rest.

:meth:`ModelRegistry.load` checks the artifact's size and sha256 against the manifest (against
corruption and half-copied files) and loads those same bytes as a :mod:`detector.registry.modelfile`
file, which cannot run code even if someone rewrote it together with its manifest. Old pickle
versions are refused by name.

Examples
--------
>>> import tempfile
>>> reg = ModelRegistry(Path(tempfile.mkdtemp()))
>>> v = reg.publish("rps", {"mean": 3.0}, training_start=0, training_end=3600,
...                 data_hash="abc", params={"window": 8})
>>> reg.current("rps") == v, reg.load(v).model
(True, {'mean': 3.0})
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from detector.registry import modelfile
from detector.registry.hygiene import (
    DEFAULT_KEEP,
    STALE_STAGING_S,
    VERSION_ID,
    RegistryHygiene,
    fsync_dir,
    staged,
)
from detector.registry.manifest import (
    ARTIFACT_NAME,
    ModelVersion,
    RegistryError,
    TimeLike,
    artifact_problem,
    check_name,
    data_hash,
    library_mismatches,
    library_versions,
    parse_manifest,
    to_json,
    to_timestamp,
)

__all__ = [
    "ARTIFACT_NAME",
    "DEFAULT_KEEP",
    "STALE_STAGING_S",
    "Fingerprint",
    "LoadedModel",
    "ModelRegistry",
    "ModelVersion",
    "RegistryError",
    "data_hash",
]

_log = logging.getLogger(__name__)

_MANIFEST = "manifest.json"
_POINTER = "CURRENT"

# signal -> token that changes whenever a version is added or removed or the pointer is rewritten.
Fingerprint = Mapping[str, str]


@dataclass(frozen=True)
class LoadedModel:
    """A verified, loaded model and the version it came from."""

    version: ModelVersion
    model: Any
    warnings: tuple[str, ...] = ()  # library minor-version differences noticed on load


def _new_version_id() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(3)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "xb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


class ModelRegistry(RegistryHygiene):
    """Publish, list, verify, load and roll back model versions under ``root``.

    Parameters
    ----------
    root : Path
        The registry folder; created on the first publish. Opening it removes stale staging
        entries (:meth:`clean_staging`).

    Notes
    -----
    Every method reads the file system afresh, so several processes (the service, ``llmwatch
    train``, a notebook) can share one registry, and one instance can be used from several threads.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.clean_staging()

    # -- writing ------------------------------------------------------------------------------
    def publish(
        self,
        signal: str,
        model: Any,
        *,
        training_start: TimeLike,
        training_end: TimeLike,
        data_hash: str,
        params: Mapping[str, Any],
        evaluation: Mapping[str, Any] | None = None,
    ) -> ModelVersion:
        """Store a fitted ``model`` as the newest version of ``signal`` and make it current.

        ``training_start``/``training_end`` are datetimes, pandas Timestamps, ISO-8601 strings or
        unix seconds. ``params`` and ``evaluation`` must be JSON-serialisable (numpy scalars are
        converted). Raises :class:`RegistryError` if :mod:`detector.registry.modelfile` cannot store
        the model or a name is bad.
        """
        check_name("signal", signal)
        start, end = to_timestamp(training_start), to_timestamp(training_end)
        if start > end:
            raise RegistryError(f"training_start {training_start} is after training_end")
        try:
            blob = modelfile.dumps(model)
        except modelfile.ModelFileError as exc:
            raise RegistryError(f"cannot store {type(model).__name__}: {exc}") from exc
        version_id = _new_version_id()
        version = ModelVersion(
            signal=signal,
            version=version_id,
            path=self.root / signal / version_id,
            created_at=datetime.now(UTC).timestamp(),
            training_start=start,
            training_end=end,
            data_hash=str(data_hash),
            params=dict(params),
            libraries=library_versions(),
            evaluation=dict(evaluation or {}),
            artifact=ARTIFACT_NAME,
            sha256=hashlib.sha256(blob).hexdigest(),
            size=len(blob),
        )
        try:
            manifest = to_json(version.manifest()).encode()
        except (TypeError, ValueError) as exc:
            raise RegistryError(f"params or evaluation of {signal!r}: {exc}") from exc
        self.clean_staging()
        with staged(self.root, f"{signal}-{version_id}") as tmp:
            _write_file(tmp / ARTIFACT_NAME, blob)
            _write_file(tmp / _MANIFEST, manifest)
            fsync_dir(tmp)
            (self.root / signal).mkdir(exist_ok=True)
            os.rename(tmp, version.path)
        fsync_dir(self.root / signal)
        # A new model supersedes any rollback: drop the pointer after the version is in place.
        with contextlib.suppress(FileNotFoundError):
            (self.root / signal / _POINTER).unlink()
        _log.info("published %s/%s (%d bytes)", signal, version_id, len(blob))
        return self._read(signal, version_id)

    def rollback(self, signal: str, version: str | None = None) -> ModelVersion:
        """Serve an older version: the one before the current, or the named one.

        The target's artifact is verified (format, size and checksum) first; the pointer is
        replaced atomically. Returns the version that is now current.
        """
        listed = self.versions(signal)
        if not listed:
            raise RegistryError(f"no versions of {signal!r} in {self.root}")
        if version is None:
            current = self.current(signal)
            older = [v for v in listed if current is not None and v.version < current.version]
            if not older:
                raise RegistryError(f"{signal!r}: no version older than {current.version}")
            target = older[-1]
        else:
            target = self.get(signal, version)
        self.verify(target)
        pointer = self.root / signal / _POINTER
        tmp = pointer.with_name(f".{_POINTER}.{secrets.token_hex(4)}")
        body = {"version": target.version, "set_at": datetime.now(UTC).isoformat()}
        try:
            _write_file(tmp, json.dumps(body).encode())
            os.replace(tmp, pointer)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(pointer.parent)
        _log.info("rolled %s back to %s", signal, target.version)
        return target

    # -- reading ------------------------------------------------------------------------------
    def signals(self) -> list[str]:
        """Signal (or group) names with at least one folder, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if self._is_signal_dir(p))

    def versions(self, signal: str) -> list[ModelVersion]:
        """Versions of ``signal``, oldest first; folders whose manifest is unusable are skipped."""
        folder = self.root / check_name("signal", signal)
        if not folder.is_dir():
            return []
        out = []
        for path in sorted(folder.iterdir()):
            if not (VERSION_ID.fullmatch(path.name) and path.is_dir()):
                continue
            try:
                out.append(self._read(signal, path.name))
            except RegistryError as exc:
                _log.warning("skipping %s: %s", path, exc)
        return out

    def get(self, signal: str, version: str) -> ModelVersion:
        """One version by id; :class:`RegistryError` if it does not exist or its manifest is bad."""
        check_name("signal", signal)
        if not VERSION_ID.fullmatch(version):
            raise RegistryError(
                f"invalid version id {version!r} (expected e.g. {_new_version_id()})"
            )
        if not (self.root / signal / version).is_dir():
            raise RegistryError(f"no version {version!r} of {signal!r} in {self.root}")
        return self._read(signal, version)

    def pinned(self, signal: str) -> str | None:
        """The version id a rollback pointer names, or None when the newest version is current."""
        pointer = self.root / check_name("signal", signal) / _POINTER
        try:
            body = json.loads(pointer.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            _log.warning("ignoring unreadable rollback pointer %s: %s", pointer, exc)
            return None
        value = body.get("version") if isinstance(body, dict) else None
        return value if isinstance(value, str) and VERSION_ID.fullmatch(value) else None

    def current(self, signal: str) -> ModelVersion | None:
        """The version to serve: the pinned one if it still exists, else the newest (or None)."""
        pin = self.pinned(signal)
        if pin is not None:
            try:
                return self.get(signal, pin)
            except RegistryError as exc:
                _log.warning("rollback pointer of %r ignored: %s", signal, exc)
        listed = self.versions(signal)
        return listed[-1] if listed else None

    def verify(self, version: ModelVersion) -> bytes:
        """The artifact's bytes after checking its format, size and sha256 against the manifest."""
        path = version.artifact_path
        where = f"{version.signal}/{version.version}"
        problem = artifact_problem(version)
        if problem is not None:
            raise RegistryError(problem)
        if path.is_symlink() or not path.is_file():
            raise RegistryError(f"{where}: artifact {version.artifact!r} is missing")
        blob = path.read_bytes()
        if len(blob) != version.size:
            raise RegistryError(
                f"{where}: artifact has {len(blob)} bytes, the manifest says {version.size}"
            )
        digest = hashlib.sha256(blob).hexdigest()
        if digest != version.sha256:
            raise RegistryError(
                f"{where}: artifact sha256 {digest[:12]}... does not match the manifest's "
                f"{version.sha256[:12]}...; refusing to load it"
            )
        return blob

    def load(self, version: ModelVersion) -> LoadedModel:
        """Verify and load one version.

        Raises :class:`RegistryError` (and builds nothing) when the artifact is an old pickle,
        its size or sha256 differs from the manifest, or a library differs by a major version
        (see :func:`detector.registry.manifest.library_mismatches`), and when
        :mod:`detector.registry.modelfile` refuses the file. Minor library differences are logged
        and listed in
        ``LoadedModel.warnings``.
        """
        # The manifest is re-read rather than trusted from the caller's object.
        version = self.get(version.signal, version.version)
        where = f"{version.signal}/{version.version}"
        problem = artifact_problem(version)  # before the libraries: an old pickle says refit
        if problem is not None:
            raise RegistryError(problem)
        refuse, minor = library_mismatches(version.libraries, library_versions())
        if refuse:
            raise RegistryError(f"{where}: incompatible libraries: {'; '.join(refuse)}")
        blob = self.verify(version)  # the very bytes hashed are the ones loaded
        for line in minor:
            _log.warning("%s: library version differs: %s", where, line)
        try:
            with warnings.catch_warnings():
                # scikit-learn warns on any version difference; the policy above decides instead.
                warnings.simplefilter("ignore")
                model = modelfile.loads(blob)
        except modelfile.ModelFileError as exc:
            raise RegistryError(f"{where}: cannot load the artifact: {exc}") from exc
        return LoadedModel(version=version, model=model, warnings=tuple(minor))

    def load_current(self, signal: str) -> LoadedModel:
        """Load the current version, falling back to older ones that load (each refusal logged)."""
        first = self.current(signal)
        if first is None:
            raise RegistryError(f"no versions of {signal!r} in {self.root}")
        candidates = [first] + [v for v in reversed(self.versions(signal)) if v != first]
        reasons = []
        for candidate in candidates:
            try:
                return self.load(candidate)
            except RegistryError as exc:
                _log.warning("not loading %s: %s", candidate.version, exc)
                reasons.append(str(exc))
        raise RegistryError(f"no loadable version of {signal!r}: {reasons[0]}")

    # -- noticing changes ---------------------------------------------------------------------
    def fingerprint(self) -> Fingerprint:
        """A cheap token per signal that changes when its versions or pointer change.

        Costs one directory listing per signal (no manifest is read); compare two with
        :meth:`changed_since`.
        """
        if not self.root.is_dir():
            return {}
        out = {}
        for folder in self.root.iterdir():
            if not self._is_signal_dir(folder):
                continue
            try:
                names = sorted(p.name for p in folder.iterdir())
                pointer = folder / _POINTER
                stat = pointer.stat() if _POINTER in names else None
            except FileNotFoundError:  # removed while listing
                continue
            token = "|".join(names)
            if stat is not None:
                token += f"|{stat.st_ino}:{stat.st_mtime_ns}:{stat.st_size}"
            out[folder.name] = hashlib.sha1(token.encode(), usedforsecurity=False).hexdigest()
        return out

    def changed_since(self, fingerprint: Fingerprint) -> set[str]:
        """Signals added, removed or changed since ``fingerprint`` was taken."""
        now = self.fingerprint()
        return {
            name
            for name in now.keys() | fingerprint.keys()
            if now.get(name) != fingerprint.get(name)
        }

    # -- internals ----------------------------------------------------------------------------
    @staticmethod
    def _is_signal_dir(path: Path) -> bool:
        try:
            check_name("signal", path.name)
        except RegistryError:
            return False
        return path.is_dir()

    def _read(self, signal: str, version: str) -> ModelVersion:
        folder = self.root / signal / version
        try:
            data = json.loads((folder / _MANIFEST).read_text())
        except FileNotFoundError:
            raise RegistryError(f"{signal}/{version}: manifest.json is missing") from None
        except (OSError, ValueError) as exc:
            raise RegistryError(f"{signal}/{version}: unreadable manifest.json: {exc}") from None
        return parse_manifest(data, folder)
