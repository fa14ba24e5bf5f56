from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pykka
import pytest
from support import Hive

pytest_plugins = ("browser",)  # the headless-Chromium fixtures: chromium_browser, browser_page


@pytest.fixture
def hive(tmp_path: Path) -> Iterator[Hive]:
    """A running daemon with m1nd up; stopped (SIGTERM, by pid) afterwards."""
    h = Hive(tmp_path / "state").start()
    try:
        yield h
    finally:
        h.stop()


@pytest.fixture(autouse=True)
def _no_actor_left() -> Iterator[None]:
    yield
    left = pykka.ActorRegistry.get_all()
    pykka.ActorRegistry.stop_all()
    assert not left, f"actors left running: {left}"


@pytest.fixture(scope="module")
def module_hive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hive]:
    """One daemon shared by a module's tests that leave it as they found it."""
    h = Hive(tmp_path_factory.mktemp("hive") / "state").start()
    try:
        yield h
    finally:
        h.stop()
