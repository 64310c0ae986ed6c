"""Registry housekeeping: the staging area, pruning old versions, clearing abandoned entries.

:class:`detector.registry.store.ModelRegistry` writes each version into ``<root>/.staging`` and
renames it into place (:func:`staged`); removal runs the other way, a version being renamed into
``.staging`` and deleted there. Whoever works on a staging entry holds its lock, so the
housekeeping of one process never removes what another is still writing. The registry inherits
the two ways things leave it, :meth:`RegistryHygiene.prune` and
:meth:`RegistryHygiene.clean_staging`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from detector.registry.manifest import check_name

__all__ = [
    "DEFAULT_KEEP",
    "STALE_STAGING_S",
    "VERSION_ID",
    "RegistryHygiene",
    "fsync_dir",
    "staged",
]

# The registry logs as one component, wherever the code that does the work lives.
_log = logging.getLogger("detector.registry.store")

# Versions prune() keeps per signal: at the default 12-hour refit, five days to roll back to.
DEFAULT_KEEP = 10
# Seconds a staging entry must sit untouched (and unlocked) before it counts as abandoned.
STALE_STAGING_S = 600.0
_STAGING = ".staging"
# A version folder's name (ids sort by creation time): the registry lists, and prune() counts,
# every folder so named.
VERSION_ID = re.compile(r"^\d{8}T\d{12}Z-[0-9a-f]{6}$")  # 20260105T120000123456Z-a1b2c3


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (where the platform lets a folder be opened for it)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[bool]:
    """Hold an exclusive lock on ``path`` for the block; False when another process holds it.

    A publish holds its staging folder's lock until the version is in place. The lock dies with
    its process, so an unlocked folder is one no live publish owns.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        except OSError:  # a file system that cannot lock folders: age alone decides
            pass
        yield True
    finally:
        os.close(fd)


@contextlib.contextmanager
def staged(root: Path, name: str) -> Iterator[Path]:
    """A new folder ``<root>/.staging/<name>``, locked for the block and removed if it fails.

    The block writes the folder and renames it into place while the lock is still held, so no
    :meth:`RegistryHygiene.clean_staging` of another process takes it for abandoned meanwhile.
    """
    tmp = root / _STAGING / name
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.mkdir()
        with _locked(tmp):
            yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class _Registry(Protocol):
    """What the housekeeping needs of the registry it is mixed into."""

    root: Path

    def pinned(self, signal: str) -> str | None: ...


class RegistryHygiene:
    """The housekeeping methods of :class:`detector.registry.store.ModelRegistry`."""

    def prune(self: _Registry, signal: str, keep: int = DEFAULT_KEEP) -> list[str]:
        """Remove all but the newest ``keep`` versions of ``signal``; returns the ids removed.

        The version a rollback pins stays too, so the current version is never removed. Each
        version is renamed into ``.staging`` first (readers see it vanish at once), then deleted.
        Folders whose manifest is unusable count as versions, so they age out like the others.
        """
        if type(keep) is not int or keep < 1:
            raise ValueError(f"keep must be an integer >= 1, got {keep!r}")
        folder = self.root / check_name("signal", signal)
        if not folder.is_dir():
            return []
        ids = sorted(
            p.name for p in folder.iterdir() if VERSION_ID.fullmatch(p.name) and p.is_dir()
        )
        spared = {*ids[-keep:], self.pinned(signal)}
        removed = []
        for version in (v for v in ids if v not in spared):
            trash = self.root / _STAGING / f"{signal}-{version}.pruned"
            try:
                trash.parent.mkdir(exist_ok=True)
                os.rename(folder / version, trash)
                with _locked(trash):  # a concurrent clean_staging leaves it to us
                    shutil.rmtree(trash, ignore_errors=True)
            except FileNotFoundError:  # another process pruned it meanwhile
                continue
            except OSError as exc:
                _log.warning("cannot prune %s/%s: %s", signal, version, exc)
                continue
            removed.append(version)
        if removed:
            fsync_dir(folder)
            _log.info("pruned %d old versions of %s", len(removed), signal)
        return removed

    def clean_staging(self: _Registry, older_than: float = STALE_STAGING_S) -> list[str]:
        """Remove what crashed publishes and prunes left in ``.staging``; returns the names removed.

        An entry goes once it has been left untouched for ``older_than`` seconds and no live
        publish holds its lock, so the publishes of other processes sharing the registry (the
        service's fit worker, a notebook) are never disturbed. Failures are logged, not raised:
        a registry may be read-only to its reader.
        """
        try:
            entries = list((self.root / _STAGING).iterdir())
        except OSError:  # no staging folder yet, or not readable
            return []
        removed, now = [], time.time()
        for entry in entries:
            try:
                stat = entry.lstat()
                if now - stat.st_mtime < older_than:
                    continue
                with _locked(entry) as free:
                    if not free:
                        continue
                    if entry.is_dir():
                        shutil.rmtree(entry)
                    else:
                        entry.unlink()
                removed.append(entry.name)
            except FileNotFoundError:  # another process cleaned it meanwhile
                continue
            except OSError as exc:  # e.g. a registry read-only to this process
                _log.warning("cannot remove the stale %s: %s", entry, exc)
        if removed:
            _log.info("removed stale staging entries: %s", ", ".join(sorted(removed)))
        return removed
