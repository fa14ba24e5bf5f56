"""Both drivers answer every question of the `Driver` protocol themselves (no
``getattr`` probing left to callers), without being opened: what the web UI
shows, whether `/compact` is refused and why, and that an idle cancel is a no-op."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from hyperhive.errors import Conflict
from hyperhive.harness.builtin import NO_CONVERSATION, BuiltinDriver
from hyperhive.harness.claude import ClaudeDriver
from hyperhive.harness.driver import Driver


def builtin(tmp_path: Path) -> Driver:
    return BuiltinDriver("a", "/nonexistent.sock")


def claude_logged_out(tmp_path: Path) -> Driver:
    return ClaudeDriver("a", "/nonexistent.sock", tmp_path, env={"PATH": "/bin"})


def claude_with_a_session(tmp_path: Path) -> Driver:
    (tmp_path / "claude-session").write_text("s-1\n")
    return ClaudeDriver("a", "/nonexistent.sock", tmp_path, env={"PATH": "/bin", "ANTHROPIC_API_KEY": "k"})


@pytest.mark.parametrize(("make", "name", "needs_login", "can_compact", "refusal"), [
    (builtin, "builtin", False, False, NO_CONVERSATION),
    (claude_logged_out, "claude", True, True, "no conversation to compact yet"),
    (claude_with_a_session, "claude", False, True, None),
])
async def test_what_a_driver_says_about_itself(make: Callable[[Path], Driver], name: str, needs_login: bool,
                                               can_compact: bool, refusal: str | None, tmp_path: Path) -> None:
    driver = make(tmp_path)
    assert (driver.name, driver.needs_login, driver.can_compact) == (name, needs_login, can_compact)
    assert driver.compact_refusal() == refusal
    assert await driver.cancel() is False  # no turn runs


async def test_the_builtin_driver_refuses_to_compact() -> None:
    with pytest.raises(Conflict, match=NO_CONVERSATION):
        await BuiltinDriver("a", "/nonexistent.sock").compact(lambda kind, **data: None)
