"""``llmwatch models list|show|rollback``: look into the model registry and roll a signal back.

The registry root is ``--root`` when given, else ``registry_root`` of the detector configuration
(``--config``, by default ``configs/detector.yaml`` when it exists, plus environment overrides).
"""

from __future__ import annotations

import argparse
import json
import sys
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
    p.set_defaults(func=_run_list)
    p = actions.add_parser(
        "show", help="manifest of a version, with its artifact's format and checksum verified"
    )
    p.add_argument("signal")
    p.add_argument("version", nargs="?", help="version id (default: the current one)")
    _add_common(p)
    p.set_defaults(func=_run_show)
    p = actions.add_parser(
        "rollback",
        help="serve an older version until the next one is published",
        description="Point the signal at the previous version (or the named one). A running "
        "`llmwatch detect` notices and swaps it in; the next published model supersedes it.",
    )
    p.add_argument("signal")
    p.add_argument("version", nargs="?", help="version id (default: the one before the current)")
    _add_common(p)
    p.set_defaults(func=_run_rollback)


def _registry(args: argparse.Namespace) -> ModelRegistry:
    from detector.registry.store import ModelRegistry

    if args.root is not None:
        return ModelRegistry(args.root)
    from detector.service.config import DEFAULT_CONFIG, load_settings

    config = args.config
    if config is None and DEFAULT_CONFIG.is_file():
        config = DEFAULT_CONFIG
    return ModelRegistry(load_settings(config).registry_root)


def _fail(args: argparse.Namespace, message: str) -> int:
    print(f"llmwatch models {args.action}: error: {message}", file=sys.stderr)
    return 1


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _summary(v: ModelVersion, current: bool) -> dict[str, object]:
    from detector.registry.manifest import artifact_problem

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
    }


def _run_list(args: argparse.Namespace) -> int:
    from detector.registry.store import RegistryError

    try:
        reg = _registry(args)
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
    if not rows:
        print(f"no model versions in {reg.root}")
        return 0
    header = ("", "SIGNAL", "VERSION", "CREATED", "TRAINED ON", "BYTES")
    table = [
        (
            ("*" if r["current"] else "") + ("!" if r["refused"] else ""),
            r["signal"],
            r["version"],
            r["created_at"],
            f"{r['training_start']} .. {r['training_end']}",
            str(r["size"]),
        )
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in [header, *table]) for i in range(len(header))]
    for row in [header, *table]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    print("(* = current)")
    if any(r["refused"] for r in rows):
        print("(! = refused: an artifact this llmwatch does not load; refit with llmwatch train)")
    return 0


def _run_show(args: argparse.Namespace) -> int:
    from detector.registry.manifest import artifact_problem
    from detector.registry.store import RegistryError

    try:
        reg = _registry(args)
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
        reg = _registry(args)
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
