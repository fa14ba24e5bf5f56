"""The package stays typed and linted: `mypy --strict hyperhive` and `ruff` are
part of the suite, so `make test` (and CI) fail on a regression."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.e2e  # whole-package tools: tens of seconds


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_mypy_strict_is_clean() -> None:
    out = _run("mypy", "--strict", "hyperhive")
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]


def test_ruff_is_clean() -> None:
    out = _run("ruff", "check", "hyperhive", "tests", "bench")
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]


def test_no_module_is_over_400_lines() -> None:
    long = {str(p.relative_to(REPO)): n for p in (REPO / "hyperhive").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def test_the_harness_imports_nothing_from_the_daemons_web_side() -> None:
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "hyperhive" / "harness").rglob("*.py")
                 if "hyperhive.web" in p.read_text()]
    assert not offenders, offenders
