"""Work-preserving purge (issue 14, item 5): tombstones.purge, the one path of
``purge`` and ``destroy --purge``, refuses while the clone holds work the
operator's repo does not keep, and says what; ``force`` purges anyway. Real
repos; the sandboxed git runs (e2e tier)."""

from __future__ import annotations

from pathlib import Path

import pytest
from workspace_status_repos import Layout, commit, git, make_layout

from hyperhive.errors import Conflict
from hyperhive.tombstones import list_tombstones, purge

pytestmark = pytest.mark.e2e


def gone(lay: Layout) -> bool:
    return not (lay.paths.agents / lay.name).exists() and not (lay.paths.applied_root / lay.name).exists()


def test_an_unpulled_commit_is_named_and_nothing_is_removed(tmp_path: Path) -> None:
    lay = make_layout(tmp_path)
    oid = commit(lay.work, "result.txt", "42\n", "the answer, not yet pulled")
    with pytest.raises(Conflict) as err:
        purge(lay.paths, lay.name, set())
    text = str(err.value)
    assert oid[:12] in text and "the answer, not yet pulled" in text and "--force" in text
    assert (lay.work / "result.txt").exists() and not gone(lay)
    assert purge(lay.paths, lay.name, set(), force=True)
    assert gone(lay)


def test_pulled_work_purges(tmp_path: Path) -> None:
    lay = make_layout(tmp_path)
    oid = commit(lay.work, "result.txt", "42\n", "pulled")
    lay.pull()
    purge(lay.paths, lay.name, set())
    assert gone(lay)
    assert lay.repo is not None
    assert git(lay.repo, "rev-parse", "hive/a") == oid  # the work lives on in the operator's repo


def test_uncommitted_changes_refuse_with_the_count(tmp_path: Path) -> None:
    lay = make_layout(tmp_path)
    (lay.work / "draft.txt").write_text("half done\n")
    with pytest.raises(Conflict, match=r"uncommitted changes in 1 file"):
        purge(lay.paths, lay.name, set())
    assert not gone(lay)


def test_an_unreadable_clone_refuses_fail_safe(tmp_path: Path) -> None:
    lay = make_layout(tmp_path)
    head = lay.work / ".git" / "HEAD"
    head.unlink()
    head.symlink_to("/etc/hostname")
    with pytest.raises(Conflict, match="cannot be checked"):
        purge(lay.paths, lay.name, set())
    purge(lay.paths, lay.name, set(), force=True)
    assert gone(lay)


def test_a_clean_clone_and_a_no_workspace_agent_purge(tmp_path: Path) -> None:
    lay = make_layout(tmp_path)
    purge(lay.paths, lay.name, set())
    assert gone(lay)
    (lay.paths.agents / "old" / "work").mkdir(parents=True)  # from before workspaces
    purge(lay.paths, "old", set())
    assert not (lay.paths.agents / "old").exists()


def test_the_live_check_and_containment_come_first(tmp_path: Path) -> None:
    lay = make_layout(tmp_path)
    commit(lay.work, "x", "1\n", "work")
    with pytest.raises(Conflict, match="live container"):
        purge(lay.paths, lay.name, {"a"}, force=True)
    assert not gone(lay)


def test_tombstones_carry_their_workspace(tmp_path: Path) -> None:
    lay = make_layout(tmp_path)
    oid = commit(lay.work, "x", "1\n", "kept work")
    [tomb] = list_tombstones(lay.paths, set(), 0.0, workspaces=True)
    ws = tomb.to_wire()["workspace"]
    assert ws["branch"] == "hive/a" and ws["unmerged"][0]["id"] == oid and oid[:12] in ws["lost"]
    [plain] = list_tombstones(lay.paths, set(), 0.0)
    assert plain.to_wire()["workspace"] is None
