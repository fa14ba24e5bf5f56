"""F19: needs-login and needs-update badges."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from hyperhive.badges import NEEDS_LOGIN, NEEDS_UPDATE, agent_badges, compute_badges, newest_file_mtime
from hyperhive.names import AgentName
from hyperhive.paths import AgentConfig, StatePaths


@pytest.mark.parametrize(
    ("driver", "creds", "config", "applied", "want"),
    [
        ("claude", False, 1.0, 1.0, [NEEDS_LOGIN]),
        ("claude", True, 1.0, 1.0, []),
        ("builtin", False, 1.0, 1.0, []),  # only the claude driver logs in
        ("builtin", False, 2.0, 1.0, [NEEDS_UPDATE]),
        ("claude", False, 2.0, 1.0, [NEEDS_LOGIN, NEEDS_UPDATE]),
        ("builtin", False, 1.0, 2.0, []),  # applied after the edit
        ("builtin", False, 1.0, None, [NEEDS_UPDATE]),  # never applied
        ("builtin", False, None, None, []),  # no config at all: nothing to apply
    ],
)
def test_compute_badges(driver: str, creds: bool, config: float | None, applied: float | None,
                        want: list[str]) -> None:
    assert compute_badges(driver, creds, config, applied) == want


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
    assert newest_file_mtime(tmp_path) == 5.0
