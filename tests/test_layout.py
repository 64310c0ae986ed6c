"""The layout of docs/architecture.md holds: one-way imports, small modules, a light config."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from support.requires import REPO

PACKAGES = ("llmwatch", "detector", "serving", "demo", "tests", "bench", "deploy")


def _python_files() -> list[Path]:
    return [p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))]


def test_the_import_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_loading_the_service_config_loads_no_model_code() -> None:
    code = (
        "import sys; import detector.service.config; "
        "print(sorted(m for m in ('statsmodels', 'sklearn', 'numba', 'scipy') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_detector_keeps_at_most_ten_modules_at_its_top() -> None:
    top = [p.name for p in (REPO / "detector").glob("*.py") if p.name != "__init__.py"]
    assert len(top) <= 10, top


@pytest.mark.parametrize("path", _python_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_files_and_functions_stay_small(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    assert source.count("\n") <= 400, f"{path.name}: over 400 lines"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            why = "long" in (ast.get_docstring(node) or "")
            assert length <= 60 or why, f"{node.name} is {length} lines, with no reason given"
