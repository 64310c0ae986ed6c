"""``llmwatch models list|show|rollback``: look into the model registry and roll a signal back.

The registry root is ``--root`` when given, else ``registry_root`` of the detector configuration
(``--config``, by default ``configs/detector.yaml`` when it exists, plus environment overrides).
A root that does not exist is an error (exit 2), not an empty registry: a mistyped path or a
command run outside the repository would otherwise look like "no models".
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from detector.registry.store import ModelRegistry, ModelVersion

__all__ = ["register"]


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", type=Path, help="registry folder (default: the config's)")
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="detector configuration for registry_root (default configs/detector.yaml)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``models`` command and its ``list``, ``show`` and ``rollback`` actions."""
    models = sub.add_parser(
        "models",
        help="list, inspect and roll back model versions in the registry",
        description="The model registry: <root>/<signal>/<version>/ with manifest.json and the "
        "artifact. The service serves the newest version unless rolled back.",
    )
    actions = models.add_subparsers(dest="action", required=True)
    p = actions.add_parser("list", help="versions of every signal (or of one)")
    p.add_argument("signal", nargs="?", help="only this signal")
    _add_common(p)
    p.set_defaults(func=_guarded(_run_list))
    p = actions.add_parser(
        "show", help="manifest of a version, with its artifact's format and checksum verified"
    )
    p.add_argument("signal")
    p.add_argument("version", nargs="?", help="version id (default: the current one)")
    _add_common(p)
    p.set_defaults(func=_guarded(_run_show))
    p = actions.add_parser(
        "rollback",
        help="serve an older version until the next one is published",
        description="Point the signal at the previous version (or the named one). A running "
        "`llmwatch detect` notices and swaps it in; the next published model supersedes it.",
    )
    p.add_argument("signal")
    p.add_argument("version", nargs="?", help="version id (default: the one before the current)")
    _add_common(p)
    p.set_defaults(func=_guarded(_run_rollback))


_ENV_ROOT = "LLMWATCH_DETECTOR_REGISTRY_ROOT"
# Evaluation figures the listing shows, as stored by `llmwatch train` (plain names) or by the
# notebooks' publish_candidate (``scenarios_`` prefix); the first key present wins.
_FIGURES = (
    ("F1", "f1"),
    ("PRECISION", "precision"),
    ("RECALL", "recall"),
    ("FA/DAY", "fa_per_day"),
    ("NAB", "nab_standard"),
)


class _NoRoot(Exception):
    """The registry root does not exist (exit 2, not 1: the command was pointed nowhere)."""


@dataclass(frozen=True)
class _Root:
    path: Path  # absolute
    source: str  # where the path came from, for the user

    def describe(self) -> str:
        return f"registry: {self.path} ({self.source})"


def _root(args: argparse.Namespace) -> _Root:
    """The registry root and where it came from; :class:`ConfigError` on a bad config."""
    if args.root is not None:
        return _Root(args.root.resolve(), "from --root")
    from detector.service.config import DEFAULT_CONFIG, load_settings

    config = args.config
    if config is None and DEFAULT_CONFIG.is_file():
        config = DEFAULT_CONFIG
    settings = load_settings(config)
    where = Path(config).resolve() if config is not None else None
    if any(key.upper() == _ENV_ROOT for key in os.environ):
        source = f"from {_ENV_ROOT}"
    elif where is not None and "registry_root" in settings.model_fields_set:
        source = f"from {where}: registry_root"
    elif where is not None:
        source = f"default; {where} does not set registry_root"
    else:
        source = f"default; no config: {DEFAULT_CONFIG} is not in {Path.cwd()}"
    return _Root(settings.registry_root.resolve(), source)


def _registry(args: argparse.Namespace) -> tuple[ModelRegistry, _Root]:
    from detector.registry.store import ModelRegistry

    root = _root(args)
    if not root.path.is_dir():
        what = "is not a folder" if root.path.exists() else "does not exist"
        raise _NoRoot(
            f"registry root {root.path} {what} ({root.source}); "
            "set --root or registry_root in the config"
        )
    return ModelRegistry(root.path), root


def _guarded(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``run``, with a registry root that does not exist reported as exit 2."""

    @functools.wraps(run)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except _NoRoot as exc:
            return _fail(args, str(exc), code=2)

    return wrapper


def _fail(args: argparse.Namespace, message: str, code: int = 1) -> int:
    print(f"llmwatch models {args.action}: error: {message}", file=sys.stderr)
    return code


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _summary(v: ModelVersion, current: bool) -> dict[str, object]:
    from detector.registry.manifest import artifact_problem

    candidate = v.params.get("candidate")
    return {
        "signal": v.signal,
        "version": v.version,
        "current": current,
        "refused": artifact_problem(v),  # None, or why this llmwatch will not load it
        "created_at": _when(v.created_at),
        "training_start": _when(v.training_start),
        "training_end": _when(v.training_end),
        "size": v.size,
        "evaluation": v.evaluation,
        # The notebooks' publish_candidate names the candidate; `llmwatch train` does not.
        "candidate": str(candidate) if candidate else None,
        "path": str(v.path),
    }


def _run_list(args: argparse.Namespace) -> int:
    from detector.registry.store import RegistryError

    try:
        reg, root = _registry(args)
        names = [args.signal] if args.signal else reg.signals()
        rows = []
        for name in names:
            versions = reg.versions(name)
            if args.signal and not versions:
                return _fail(args, f"no versions of {name!r} in {reg.root}")
            current = reg.current(name)
            rows += [_summary(v, v == current) for v in versions]
    except RegistryError as exc:
        return _fail(args, str(exc))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(root.describe())
    if not rows:
        print(f"no model versions in {reg.root}")
        return 0
    _print_table(rows)
    return 0


def _figure(evaluation: object, key: str) -> str:
    if not isinstance(evaluation, dict):
        return "-"
    for name in (key, f"scenarios_{key}"):
        value = evaluation.get(name)
        if isinstance(value, int | float):
            return f"{value:.3g}"
    return "-"


def _print_table(rows: list[dict[str, object]]) -> None:
    header = ["", "SIGNAL", "VERSION", "CREATED", "TRAINED ON", "BYTES"]
    table = [
        [
            ("*" if r["current"] else "") + ("!" if r["refused"] else ""),
            str(r["signal"]),
            str(r["version"]),
            str(r["created_at"]),
            f"{r['training_start']} .. {r['training_end']}",
            str(r["size"]),
        ]
        for r in rows
    ]
    # Only the columns some version has, so a registry `llmwatch train` wrote stays narrow.
    if any(r["candidate"] for r in rows):
        header.append("CANDIDATE")
        for line, r in zip(table, rows, strict=True):
            line.append(str(r["candidate"] or "-"))
    for title, key in _FIGURES:
        cells = [_figure(r["evaluation"], key) for r in rows]
        if any(c != "-" for c in cells):
            header.append(title)
            for line, cell in zip(table, cells, strict=True):
                line.append(cell)
    widths = [max(len(row[i]) for row in [header, *table]) for i in range(len(header))]
    for row in [header, *table]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    print("(* = current)")
    if any(r["refused"] for r in rows):
        print("(! = refused: an artifact this llmwatch does not load; refit with llmwatch train)")


def _run_show(args: argparse.Namespace) -> int:
    from detector.registry.manifest import artifact_problem
    from detector.registry.store import RegistryError

    try:
        reg, _ = _registry(args)
        if args.version:
            version = reg.get(args.signal, args.version)
        else:
            version = reg.current(args.signal)
            if version is None:
                return _fail(args, f"no versions of {args.signal!r} in {reg.root}")
        current = reg.current(args.signal)
    except RegistryError as exc:
        return _fail(args, str(exc))
    # A refused format is never loaded, so its checksum is skipped rather than reported "ok".
    refused = artifact_problem(version)
    problem, checksum = refused, "skipped" if refused else "ok"
    if refused is None:
        try:
            reg.verify(version)
        except RegistryError as exc:
            problem, checksum = str(exc), "FAILED"
    manifest = version.manifest()
    is_current = version == current
    if args.json:
        manifest.update(path=str(version.path), current=is_current, format=refused or "ok")
        manifest["checksum"] = problem if checksum == "FAILED" else checksum
        print(json.dumps(manifest, indent=2))
    else:
        print(f"{version.signal}/{version.version}{'  (current)' if is_current else ''}")
        print(f"path: {version.path}")
        print(json.dumps(manifest, indent=2))
        print(f"format: {'REFUSED' if refused else 'ok'}")
        print(f"checksum: {checksum}")
    if problem is not None:
        return _fail(args, problem)
    return 0


def _run_rollback(args: argparse.Namespace) -> int:
    from detector.registry.store import RegistryError

    try:
        reg, _ = _registry(args)
        before = reg.current(args.signal)
        target = reg.rollback(args.signal, args.version)
    except RegistryError as exc:
        return _fail(args, str(exc))
    if args.json:
        print(json.dumps({"signal": target.signal, "current": target.version}))
    else:
        was = before.version if before is not None else "none"
        print(f"{target.signal}: now serving {target.version} (was {was})")
    return 0
