"""F19: needs-login, needs-update and unsandboxed badges; the login check
never follows a link the agent could have planted in its state dir."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from hyperhive.badges import (
    NEEDS_LOGIN,
    NEEDS_UPDATE,
    UNSANDBOXED,
    agent_badges,
    compute_badges,
    env_login,
    newest_file_mtime,
)
from hyperhive.errors import BadName
from hyperhive.harness.claude_cmdline import CREDENTIAL_ENV
from hyperhive.names import AgentName
from hyperhive.paths import AgentConfig, StatePaths


@pytest.fixture(autouse=True)
def _no_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key in the test runner's own environment would count as a login."""
    for k in CREDENTIAL_ENV:
        monkeypatch.delenv(k, raising=False)


@pytest.mark.parametrize(
    ("driver", "creds", "config", "applied", "sandboxed", "want"),
    [
        ("claude", False, 1.0, 1.0, True, [NEEDS_LOGIN]),
        ("claude", True, 1.0, 1.0, True, []),
        ("builtin", False, 1.0, 1.0, True, []),  # only the claude driver logs in
        ("builtin", False, 2.0, 1.0, True, [NEEDS_UPDATE]),
        ("claude", False, 2.0, 1.0, True, [NEEDS_LOGIN, NEEDS_UPDATE]),
        ("builtin", False, 1.0, 2.0, True, []),  # applied after the edit
        ("builtin", False, 1.0, None, True, [NEEDS_UPDATE]),  # never applied
        ("builtin", False, None, None, True, []),  # no config at all: nothing to apply
        ("builtin", False, None, None, False, [UNSANDBOXED]),  # --sandbox off, or no bwrap
        ("claude", True, 1.0, 1.0, False, [UNSANDBOXED]),
        ("claude", False, 2.0, 1.0, False, [NEEDS_LOGIN, NEEDS_UPDATE, UNSANDBOXED]),
    ],
)
def test_compute_badges(driver: str, creds: bool, config: float | None, applied: float | None,
                        sandboxed: bool, want: list[str]) -> None:
    assert compute_badges(driver, creds, config, applied, sandboxed) == want


def test_sandboxed_is_the_default() -> None:
    assert compute_badges("builtin", False, None, None) == []


@pytest.mark.parametrize(("env", "want"), [
    ({}, False), ({"ANTHROPIC_API_KEY": ""}, False), ({"ANTHROPIC_API_KEY": "sk-x"}, True),
    ({"CLAUDE_CODE_OAUTH_TOKEN": "t"}, True), ({"ANTHROPIC_AUTH_TOKEN": "t"}, True), ({"OTHER": "x"}, False),
])
def test_env_login(env: dict[str, str], want: bool) -> None:
    assert env_login(env) is want


def set_mtime(path: Path, t: float) -> None:
    os.utime(path, (t, t))


@pytest.fixture
def paths(tmp_path: Path) -> StatePaths:
    p = StatePaths(tmp_path / "state")
    p.create_agent(AgentName("coder"), AgentConfig())
    return p


def test_a_fresh_agent_has_no_badge(paths: StatePaths) -> None:
    assert agent_badges(paths, AgentName("coder"), "builtin") == []


def test_needs_login_until_credentials_exist(paths: StatePaths) -> None:
    name = AgentName("coder")
    assert agent_badges(paths, name, "claude") == [NEEDS_LOGIN]
    creds = paths.state(name) / ".claude" / ".credentials.json"
    creds.parent.mkdir()
    creds.write_text("{}")
    assert agent_badges(paths, name, "claude") == []


def test_a_key_in_the_daemons_environment_is_a_login(paths: StatePaths, monkeypatch: pytest.MonkeyPatch) -> None:
    name = AgentName("coder")
    assert agent_badges(paths, name, "claude", logged_in_by_env=True) == []
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    assert agent_badges(paths, name, "claude") == []


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A host dir holding a real credentials file, outside the agent's state."""
    d = tmp_path / "host-home" / ".claude"
    d.mkdir(parents=True)
    (d / ".credentials.json").write_text('{"host": "secret"}')
    return d


def test_a_linked_claude_dir_is_no_login(paths: StatePaths, elsewhere: Path) -> None:
    """``.claude -> /root/.claude``: never followed, so no login."""
    name = AgentName("coder")
    (paths.state(name) / ".claude").symlink_to(elsewhere)
    assert (paths.state(name) / ".claude" / ".credentials.json").is_file()  # a following check would say yes
    assert agent_badges(paths, name, "claude") == [NEEDS_LOGIN]


def test_a_linked_credentials_file_is_no_login(paths: StatePaths, elsewhere: Path) -> None:
    """``.credentials.json -> /etc/shadow``: a link, not a regular file."""
    name = AgentName("coder")
    (paths.state(name) / ".claude").mkdir()
    (paths.state(name) / ".claude" / ".credentials.json").symlink_to(elsewhere / ".credentials.json")
    assert agent_badges(paths, name, "claude") == [NEEDS_LOGIN]


def test_a_linked_state_dir_is_no_login(paths: StatePaths, elsewhere: Path) -> None:
    name = AgentName("coder")
    state = paths.state(name)
    state.rmdir()
    state.symlink_to(elsewhere.parent)  # state/.claude/.credentials.json exists through the link
    assert agent_badges(paths, name, "claude") == [NEEDS_LOGIN]


def test_credentials_that_are_a_dir_are_no_login(paths: StatePaths) -> None:
    name = AgentName("coder")
    (paths.state(name) / ".claude" / ".credentials.json").mkdir(parents=True)
    assert agent_badges(paths, name, "claude") == [NEEDS_LOGIN]


def test_a_real_credentials_file_is_a_login(paths: StatePaths, elsewhere: Path) -> None:
    name = AgentName("coder")
    (paths.state(name) / ".claude").mkdir()
    (paths.state(name) / ".claude" / ".credentials.json").write_text("{}")
    (paths.state(name) / "decoy").symlink_to(elsewhere)  # links elsewhere in state change nothing
    assert agent_badges(paths, name, "claude") == []


def test_unsandboxed(paths: StatePaths) -> None:
    assert agent_badges(paths, AgentName("coder"), "builtin", sandboxed=False) == [UNSANDBOXED]


@pytest.mark.parametrize("name", ["..", "a/../..", "../coder", "", "Coder", "x\x00"])
def test_a_bad_name_touches_nothing(paths: StatePaths, name: str) -> None:
    with pytest.raises(BadName):
        agent_badges(paths, name, "claude")


def test_needs_update_after_a_config_edit_until_applied(paths: StatePaths) -> None:
    name = AgentName("coder")
    cfg = paths.config_dir(name) / "agent.json"
    applied = paths.applied(name) / "agent.json"
    set_mtime(applied, 1000.0)
    set_mtime(cfg, 2000.0)
    assert agent_badges(paths, name, "builtin") == [NEEDS_UPDATE]
    shutil.copy2(cfg, applied)  # applying keeps the mtime: equal is up to date
    assert agent_badges(paths, name, "builtin") == []


def test_a_prompt_file_edit_counts(paths: StatePaths) -> None:
    name = AgentName("coder")
    set_mtime(paths.applied(name) / "agent.json", 1000.0)
    set_mtime(paths.config_dir(name) / "agent.json", 1000.0)
    prompt = paths.config_dir(name) / "prompt.md"
    prompt.write_text("be brief\n")
    set_mtime(prompt, 3000.0)
    assert agent_badges(paths, name, "builtin") == [NEEDS_UPDATE]


def test_the_config_repo_metadata_is_not_config(paths: StatePaths) -> None:
    name = AgentName("coder")
    git = paths.config_dir(name) / ".git"
    git.mkdir()
    (git / "index").write_text("x")
    (paths.config_dir(name) / ".hidden").write_text("x")
    set_mtime(paths.applied(name) / "agent.json", 1000.0)
    set_mtime(paths.config_dir(name) / "agent.json", 1000.0)
    assert agent_badges(paths, name, "builtin") == []


def test_newest_file_mtime(tmp_path: Path) -> None:
    assert newest_file_mtime(tmp_path / "missing") is None
    assert newest_file_mtime(tmp_path) is None
    (tmp_path / "a").write_text("a")
    (tmp_path / "sub").mkdir()
    set_mtime(tmp_path / "a", 5.0)
    set_mtime(tmp_path / "sub", 50.0)  # dirs do not count
    (tmp_path / "far").write_text("f")
    set_mtime(tmp_path / "far", 500.0)
    (tmp_path / "sub" / "ln").symlink_to(tmp_path / "far")  # not directly in: not looked at
    (tmp_path / "far").rename(tmp_path / ".far")  # dot entries do not count
    (tmp_path / "ln").symlink_to(tmp_path / ".far")  # links do not count
    assert newest_file_mtime(tmp_path) == 5.0
    (tmp_path / "a").unlink()
    (tmp_path / "f").write_text("x")
    assert newest_file_mtime(tmp_path / "f") is None  # not a directory
