"""Tests of the registry's housekeeping: pruning old versions, the staging area's locks, and the
cleaning of what crashed publishes left in it."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import pytest

from detector.registry.hygiene import staged
from detector.registry.store import DEFAULT_KEEP, ModelRegistry, ModelVersion

WINDOW = {"training_start": "2026-01-05T00:00:00Z", "training_end": "2026-01-06T00:00:00Z"}


def publish(reg: ModelRegistry, model: object = None) -> ModelVersion:
    model = model if model is not None else {"m": 1}
    return reg.publish("rps", model, data_hash="h", params={}, **WINDOW)


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


@pytest.fixture
def reg(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "models")


def test_prune_keeps_the_newest_and_the_pinned(reg: ModelRegistry) -> None:
    published = [publish(reg, model={"n": i}) for i in range(6)]
    broken = reg.root / "rps" / "20200101T000000000000Z-abcdef"  # oldest, manifest missing
    broken.mkdir()
    reg.rollback("rps", published[1].version)
    removed = reg.prune("rps", keep=2)
    assert removed == [broken.name] + [published[i].version for i in (0, 2, 3)]
    assert reg.versions("rps") == [published[i] for i in (1, 4, 5)]
    assert reg.current("rps") == published[1] and reg.load_current("rps").model == {"n": 1}
    assert list((reg.root / ".staging").iterdir()) == []
    assert reg.prune("rps", keep=2) == [] and reg.prune("missing") == []
    publish(reg)  # clears the pin: the newest is current, and keep=1 never removes it
    assert reg.prune("rps", keep=1) == [published[i].version for i in (1, 4, 5)]
    with pytest.raises(ValueError, match="keep must be an integer >= 1, got 0"):
        reg.prune("rps", keep=0)


def test_opening_a_registry_removes_stale_staging(tmp_path: Path) -> None:
    staging = tmp_path / "models" / ".staging"
    staging.mkdir(parents=True)
    crashed, fresh, stray = staging / "rps-crashed", staging / "rps-fresh", staging / "x.tmp"
    crashed.mkdir()
    (crashed / "model.npz").write_bytes(b"half")
    fresh.mkdir()
    stray.write_bytes(b"")
    _age(crashed, 3600)
    _age(stray, 3600)
    reg = ModelRegistry(tmp_path / "models")
    assert sorted(p.name for p in staging.iterdir()) == ["rps-fresh"]
    assert reg.clean_staging(older_than=0.0) == ["rps-fresh"]


def test_staging_held_by_a_live_publish_is_left_alone(reg: ModelRegistry) -> None:
    publish(reg)
    live = reg.root / ".staging" / "rps-live"
    live.mkdir()
    _age(live, 3600)
    fd = os.open(live, os.O_RDONLY)  # what a publish in another process holds while it writes
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert reg.clean_staging(older_than=0.0) == [] and live.is_dir()
        publish(reg)  # publishing cleans staging too, and leaves it alone as well
        assert live.is_dir()
    finally:
        os.close(fd)  # the publish died: its folder is stale now
    assert reg.clean_staging(older_than=0.0) == ["rps-live"]


def test_prune_keeps_default_keep_versions_by_default(reg: ModelRegistry) -> None:
    published = [publish(reg, model={"n": i}) for i in range(DEFAULT_KEEP + 2)]
    assert reg.prune("rps") == [v.version for v in published[:2]]
    assert reg.versions("rps") == published[2:]


def test_a_staged_folder_is_locked_while_written_and_removed_if_the_write_fails(
    reg: ModelRegistry,
) -> None:
    with pytest.raises(OSError, match="disk full"), staged(reg.root, "rps-x") as tmp:
        (tmp / "model.npz").write_bytes(b"half")
        _age(tmp, 3600)
        assert reg.clean_staging(older_than=0.0) == [] and tmp.is_dir()  # held: not abandoned
        raise OSError("disk full")
    assert not tmp.exists()
