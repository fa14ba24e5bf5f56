from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest
import support
from agent_harness import HarnessProc
from support import Hive, MissingE2EMarker

pytest_plugins = ("browser",)  # the headless-Chromium fixtures: chromium_browser, browser_page


# The tiers (issue 13): `pytest -m "not e2e"` is the fast one. A test that starts a
# daemon, a harness subprocess or a browser must carry the e2e marker; the start
# points (Hive.start, HarnessProc.start, the browser fixtures) ask
# support.require_e2e, which reads the test recorded here. The record spans the
# item's whole protocol: a module-scoped fixture starts inside the setup of the
# module's first test that asks for it, and is judged by that test's markers.
@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    support.enter_test(item.nodeid, item.get_closest_marker("e2e") is not None)
    try:
        return (yield)
    finally:
        support.enter_test(None)


def _started(value: Any) -> str | None:
    """What ``value`` is, when it is a running daemon, harness or browser object."""
    if isinstance(value, Hive) and value.proc is not None:
        return "a daemon (tests/support.Hive)"
    if isinstance(value, HarnessProc) and value.proc is not None:
        return "a harness subprocess (tests/agent_harness.HarnessProc)"
    if type(value).__module__.startswith("playwright."):
        return "a browser (tests/browser.py)"
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, object, object]:
    """A later test of a module reuses a module-scoped daemon or browser without
    starting it: judge it by the fixture values it was given."""
    result = yield
    if item.get_closest_marker("e2e") is None:
        for name, value in getattr(item, "funcargs", {}).items():
            what = _started(value)
            if what is not None:
                raise MissingE2EMarker(
                    f"{item.nodeid} uses {what} (fixture {name!r}) but has no e2e marker: decorate it with "
                    f"@pytest.mark.e2e or set `pytestmark = pytest.mark.e2e` in its module")
    return result


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
