from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pykka
import pytest
from support import Hive


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
