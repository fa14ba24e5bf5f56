"""The fault suite (issue 16): every test here starts a daemon (``faults`` and
``e2e`` markers, so the fast tier skips them) and reports its figures, which
the run prints at its end (``faults: …`` lines)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from faults_common import FIGURES, Fleet


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("fault suite figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """A daemon with the fuzzed agent running and its sink stopped; stopped (SIGTERM, by pid) after."""
    f = Fleet.start(tmp_path / "state")
    try:
        yield f
    finally:
        f.stop()
