"""What a test needs from the machine, and what happens when it is missing.

A test that needs a binary, a data folder or a package that is not there fails with the way to
get it: CI installs everything, and a silent skip there would hide a test that never ran. Only
where skipping is asked for (``LLMWATCH_TEST_ALLOW_MISSING=1``, as ``make check`` sets for its
fast loop) does it skip instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

__all__ = ["ALLOW_MISSING_ENV", "NAB_ROOT", "REPO", "missing", "need_binary", "need_nab"]

ALLOW_MISSING_ENV = "LLMWATCH_TEST_ALLOW_MISSING"
REPO = Path(__file__).resolve().parents[2]
# The NAB corpus beside the checkout, as the Makefile's NAB default.
NAB_ROOT = Path(os.environ.get("LLMWATCH_NAB") or REPO.parent / "shared" / "nab")


def missing(what: str, how: str) -> None:
    """Fail (or, when allowed, skip) the running test: ``what`` is absent, ``how`` gets it."""
    message = f"{what} is missing ({how})"
    if os.environ.get(ALLOW_MISSING_ENV) == "1":
        pytest.skip(message)
    pytest.fail(f"{message}; set {ALLOW_MISSING_ENV}=1 to skip instead", pytrace=False)


def need_binary(binary: str, how: str) -> None:
    """:func:`missing` unless ``binary`` is an executable file."""
    if not os.access(binary, os.X_OK):
        missing(binary, how)


def need_nab() -> Path:
    """The NAB corpus folder, or :func:`missing`."""
    if not (NAB_ROOT / "labels").is_dir():
        missing(f"the NAB corpus at {NAB_ROOT}", "set LLMWATCH_NAB to a copy")
    return NAB_ROOT
