"""Issue 14: how an agent's clone reads in `hive ls` and on the dashboard (pure)."""

from __future__ import annotations

from typing import Any

from hyperhive.cli_ls import format_ls
from hyperhive.web.dashboard.views import workspace_text
from hyperhive.workspace_status import Commit, WorkStatus, lost_work


def ws(**kw: Any) -> dict[str, Any]:
    return {"branch": "hive/a", "ahead": 0, "dirty": False, "unpulled": 0, "reason": None, **kw}


def test_workspace_text() -> None:
    assert workspace_text(None) is None
    assert workspace_text(ws()) == "hive/a"
    assert workspace_text(ws(ahead=3, dirty=True)) == "hive/a +3 *"
    assert workspace_text(ws(ahead=4, unpulled=2)) == "hive/a +4 ^2"
    assert workspace_text(ws(branch=None, reason="HEAD is a link")) == "(detached) ?"


def row(name: str, workspace: dict[str, Any] | None) -> dict[str, Any]:
    return {"name": name, "role": "agent", "state": "running", "badges": [], "usage": None, "workspace": workspace}


def test_ls_has_a_workspace_column_when_any_agent_has_one() -> None:
    assert "WORKSPACE" not in format_ls([row("a", None)])
    lines = format_ls([row("a", ws(ahead=3, dirty=True)), row("b", None)]).splitlines()
    header = lines[0].split()
    assert header[-2:] == ["WORKSPACE", "BADGES"]
    assert "hive/a +3 *" in lines[1]
    assert lines[2].split()[-2:] == ["-", "-"]


def test_lost_work_says_what_and_how_much() -> None:
    assert lost_work(WorkStatus(False)) is None
    assert lost_work(WorkStatus(True, branch="hive/a")) is None
    commits = tuple(Commit(f"{i:040x}", f"subject {i}", pulled=False) for i in range(7))
    text = lost_work(WorkStatus(True, unmerged=commits, unmerged_count=9, unpulled=9, repo="/r", dirty=True,
                                dirty_files=2)) or ""
    assert text.startswith("9 commit(s) not in the operator's repo, 9 not pulled: ")
    assert "subject 4" in text and "subject 5" not in text and "(and 4 more)" in text
    assert text.endswith("uncommitted changes in 2 file(s)")
    assert "cannot be checked: HEAD is a link" in (lost_work(WorkStatus(True, reason="HEAD is a link")) or "")
