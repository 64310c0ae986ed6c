"""Tests of ``llmwatch models list|show|rollback``, run in-process."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import pytest

from detector.registry.store import ModelRegistry, ModelVersion
from llmwatch.cli import main


def _publish(reg: ModelRegistry, signal: str, n: int) -> ModelVersion:
    return reg.publish(
        signal,
        {"n": n},
        training_start="2026-01-05",
        training_end="2026-02-04",
        data_hash="h",
        params={"n": n},
        evaluation={"f1": 0.5 + n / 10},
    )


@pytest.fixture
def reg(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "models")


def _json(capsys: pytest.CaptureFixture[str]) -> object:
    return json.loads(capsys.readouterr().out)


def test_list_marks_the_current_version(reg: ModelRegistry, capsys) -> None:
    a, b = _publish(reg, "rps", 0), _publish(reg, "rps", 1)
    c = _publish(reg, "latency_p95", 2)
    assert main(["models", "list", "--root", str(reg.root), "--json"]) == 0
    rows = _json(capsys)
    assert [(r["signal"], r["version"], r["current"]) for r in rows] == [
        ("latency_p95", c.version, True),
        ("rps", a.version, False),
        ("rps", b.version, True),
    ]
    assert rows[0]["training_start"] == "2026-01-05 00:00:00Z"
    assert rows[0]["candidate"] is None and rows[0]["path"] == str(c.path.resolve())
    assert main(["models", "list", "rps", "--root", str(reg.root)]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0] == f"registry: {reg.root.resolve()} (from --root)"
    assert text[1].split() == ["SIGNAL", "VERSION", "CREATED", "TRAINED", "ON", "BYTES", "F1"]
    assert text[3].startswith("*") and b.version in text[3] and a.version in text[2]
    assert text[2].split()[-1] == "0.5" and text[3].split()[-1] == "0.6"


def test_list_empty_and_unknown(reg: ModelRegistry, capsys) -> None:
    reg.root.mkdir()
    assert main(["models", "list", "--root", str(reg.root)]) == 0
    assert "no model versions" in capsys.readouterr().out
    assert main(["models", "list", "nope", "--root", str(reg.root)]) == 1
    assert "no versions of 'nope'" in capsys.readouterr().err
    assert main(["models", "list", "../x", "--root", str(reg.root)]) == 1
    assert "invalid signal name" in capsys.readouterr().err


def test_show_verifies_the_checksum(reg: ModelRegistry, capsys) -> None:
    a, b = _publish(reg, "rps", 0), _publish(reg, "rps", 1)
    assert main(["models", "show", "rps", "--root", str(reg.root), "--json"]) == 0
    shown = _json(capsys)
    assert shown["version"] == b.version and shown["current"] and shown["checksum"] == "ok"
    assert shown["evaluation"] == {"f1": 0.6} and shown["artifact"]["sha256"] == b.sha256
    assert main(["models", "show", "rps", a.version, "--root", str(reg.root)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"rps/{a.version}\n") and "format: ok\nchecksum: ok" in out
    a.artifact_path.write_bytes(b"tampered")
    assert main(["models", "show", "rps", a.version, "--root", str(reg.root)]) == 1
    captured = capsys.readouterr()
    assert "checksum: FAILED" in captured.out and "manifest says" in captured.err
    assert main(["models", "show", "rps", a.version, "--root", str(reg.root), "--json"]) == 1
    assert "manifest says" in _json(capsys)["checksum"]
    assert main(["models", "show", "rps", "not-a-version", "--root", str(reg.root)]) == 1
    assert "invalid version id" in capsys.readouterr().err
    assert main(["models", "show", "missing", "--root", str(reg.root)]) == 1
    assert "no versions of 'missing'" in capsys.readouterr().err


def _make_old_pickle(v: ModelVersion) -> None:
    """Turn ``v`` into a version as llmwatch wrote them before: ``model.pkl``, hash matching."""
    blob = pickle.dumps({"n": 0})
    v.artifact_path.unlink()
    (v.path / "model.pkl").write_bytes(blob)
    manifest = json.loads((v.path / "manifest.json").read_text())
    manifest["artifact"] = {
        "file": "model.pkl",
        "sha256": hashlib.sha256(blob).hexdigest(),
        "size": len(blob),
    }
    (v.path / "manifest.json").write_text(json.dumps(manifest))


def test_an_old_pickle_version_is_shown_as_refused(reg: ModelRegistry, capsys) -> None:
    old, new = _publish(reg, "rps", 0), _publish(reg, "rps", 1)
    _make_old_pickle(old)
    assert main(["models", "show", "rps", old.version, "--root", str(reg.root)]) == 1
    captured = capsys.readouterr()
    assert "format: REFUSED\nchecksum: skipped" in captured.out
    assert "checksum: ok" not in captured.out
    assert "is a pickle" in captured.err and "refit with llmwatch train" in captured.err
    assert main(["models", "show", "rps", old.version, "--root", str(reg.root), "--json"]) == 1
    shown = _json(capsys)
    assert "refit with llmwatch train" in shown["format"] and shown["checksum"] == "skipped"
    assert main(["models", "list", "--root", str(reg.root), "--json"]) == 0
    rows = _json(capsys)
    assert "refit" in rows[0]["refused"] and rows[1]["refused"] is None and rows[1]["current"]
    assert main(["models", "list", "--root", str(reg.root)]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[2].startswith("!") and text[3].startswith("*") and "refit" in text[-1]
    assert main(["models", "rollback", "rps", "--root", str(reg.root)]) == 1
    assert "refit with llmwatch train" in capsys.readouterr().err
    assert reg.current("rps") == new


def test_rollback_and_back(reg: ModelRegistry, capsys) -> None:
    a, b = _publish(reg, "rps", 0), _publish(reg, "rps", 1)
    assert main(["models", "rollback", "rps", "--root", str(reg.root)]) == 0
    assert capsys.readouterr().out.strip() == f"rps: now serving {a.version} (was {b.version})"
    assert reg.current("rps") == a
    assert main(["models", "rollback", "rps", "--root", str(reg.root)]) == 1
    assert "no version older" in capsys.readouterr().err
    assert main(["models", "rollback", "rps", b.version, "--root", str(reg.root), "--json"]) == 0
    assert _json(capsys) == {"signal": "rps", "current": b.version}
    assert main(["models", "rollback", "other", "--root", str(reg.root)]) == 1
    assert "no versions of 'other'" in capsys.readouterr().err


def test_root_comes_from_the_config(reg: ModelRegistry, tmp_path: Path, capsys) -> None:
    v = _publish(reg, "rps", 0)
    config = tmp_path / "detector.yaml"
    config.write_text(f"registry_root: {reg.root}\n")
    assert main(["models", "list", "--config", str(config), "--json"]) == 0
    assert [r["version"] for r in _json(capsys)] == [v.version]
    config.write_text("registry_rot: x\n")
    assert main(["models", "list", "--config", str(config)]) == 1
    assert "registry_rot: unknown key" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [["list"], ["list", "rps", "--json"], ["show", "rps"], ["rollback", "rps"]],
)
def test_a_root_that_does_not_exist_exits_2(tmp_path: Path, args: list[str], capsys) -> None:
    missing = tmp_path / "no-such-root"
    assert main(["models", *args, "--root", str(missing)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"registry root {missing} does not exist (from --root)" in captured.err
    assert len(captured.err.splitlines()) == 1 and not missing.exists()
    (tmp_path / "a-file").write_text("")
    assert main(["models", *args, "--root", str(tmp_path / "a-file")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_list_says_where_the_root_came_from(
    reg: ModelRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    _publish(reg, "rps", 0)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LLMWATCH_DETECTOR_REGISTRY_ROOT", raising=False)
    config = tmp_path / "detector.yaml"
    config.write_text("registry_root: models\n")
    assert main(["models", "list", "--config", str(config)]) == 0
    where = f"registry: {reg.root.resolve()}"
    assert capsys.readouterr().out.splitlines()[0] == f"{where} (from {config}: registry_root)"
    config.write_text("interval: 30s\n")
    assert main(["models", "list", "--config", str(config)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == f"{where} (default; {config} does not set registry_root)"
    assert main(["models", "list"]) == 0  # no configs/detector.yaml in tmp_path
    first = capsys.readouterr().out.splitlines()[0]
    assert first == f"{where} (default; no config: configs/detector.yaml is not in {tmp_path})"
    monkeypatch.setenv("LLMWATCH_DETECTOR_REGISTRY_ROOT", str(tmp_path / "elsewhere"))
    assert main(["models", "list", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "elsewhere does not exist (from LLMWATCH_DETECTOR_REGISTRY_ROOT)" in err


def test_list_shows_the_candidate_and_its_figures(reg: ModelRegistry, capsys) -> None:
    _publish(reg, "rps", 0)  # `llmwatch train`'s: no candidate, a plain f1
    reg.publish(
        "rps",
        {"n": 1},
        training_start="2026-01-05",
        training_end="2026-02-04",
        data_hash="h",
        params={"candidate": "enter-0.98"},
        evaluation={
            "scenarios_f1": 0.98861,
            "scenarios_precision": 1.0,
            "scenarios_recall": 0.977,
            "scenarios_fa_per_day": 0.0,
            "scenarios_nab_standard": 74.93,
            "history_alerts_per_day": 0.5,
        },
    )
    assert main(["models", "list", "--root", str(reg.root)]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[1].split()[-6:] == ["CANDIDATE", "F1", "PRECISION", "RECALL", "FA/DAY", "NAB"]
    assert text[2].split()[-6:] == ["-", "0.5", "-", "-", "-", "-"]
    assert text[3].split()[-6:] == ["enter-0.98", "0.989", "1", "0.977", "0", "74.9"]
    assert main(["models", "list", "--root", str(reg.root), "--json"]) == 0
    assert [r["candidate"] for r in _json(capsys)] == [None, "enter-0.98"]


def test_bad_usage_exits_with_argparse_error(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["models", "frobnicate"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err
