"""Issue 14: an agent's clone's branch, commits ahead, uncommitted changes and
the commits a purge would lose, on real git repos (the sandboxed git runs:
e2e tier)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from workspace_status_repos import commit, git, make_layout

from hyperhive.names import AgentName
from hyperhive.paths import StatePaths
from hyperhive.workspace_status import cached_status, forget, lost_work, read_workspace, work_status

pytestmark = pytest.mark.e2e  # a real bubblewrap sandbox runs git in the clone


def test_a_fresh_clone_is_clean_and_level(tmp_path: Path) -> None:
    lay = make_layout(tmp_path)
    st = work_status(lay.paths, lay.name)
    assert (st.present, st.branch, st.ahead, st.dirty, st.unmerged_count, st.reason) == (
        True, "hive/a", 0, False, 0, None)
    assert lost_work(st) is None


def test_an_unpulled_commit_is_named_with_its_subject(tmp_path: Path) -> None:
    lay = make_layout(tmp_path)
    oid = commit(lay.work, "notes.txt", "work\n", "the agent's unpulled work")
    st = work_status(lay.paths, lay.name)
    assert (st.head, st.ahead, st.unmerged_count, st.unpulled, st.dirty) == (oid, 1, 1, 1, False)
    assert [(c.id, c.subject, c.pulled) for c in st.unmerged] == [(oid, "the agent's unpulled work", False)]
    lost = lost_work(st)
    assert lost is not None and oid[:12] in lost and "not pulled" in lost


def test_pulled_commits_are_kept_and_still_ahead(tmp_path: Path) -> None:
    lay = make_layout(tmp_path)
    commit(lay.work, "a.txt", "1\n", "one")
    commit(lay.work, "b.txt", "2\n", "two")
    lay.pull()
    st = work_status(lay.paths, lay.name)
    assert (st.ahead, st.unmerged_count, st.unpulled, st.dirty) == (2, 0, 0, False)
    assert lost_work(st) is None
    third = commit(lay.work, "c.txt", "3\n", "three")  # after the pull
    st = work_status(lay.paths, lay.name)
    assert (st.ahead, st.unmerged_count, st.unpulled) == (3, 1, 1)
    assert [c.id for c in st.unmerged] == [third]


def test_merged_into_the_operators_head_is_not_ahead(tmp_path: Path) -> None:
    lay = make_layout(tmp_path)
    commit(lay.work, "a.txt", "1\n", "one")
    lay.pull()
    assert lay.repo is not None
    git(lay.repo, "merge", "-q", "--ff-only", "hive/a")
    assert work_status(lay.paths, lay.name).ahead == 0


def test_uncommitted_changes_count_files(tmp_path: Path) -> None:
    lay = make_layout(tmp_path)
    (lay.work / "README").write_text("changed\n")  # tracked, modified
    (lay.work / "new.txt").write_text("untracked\n")
    (lay.work / "sub").mkdir()
    (lay.work / "sub" / "deep.txt").write_text("untracked too\n")
    st = work_status(lay.paths, lay.name)
    assert (st.dirty, st.dirty_files) == (True, 3)
    assert "uncommitted changes in 3 file(s)" in (lost_work(st) or "")


def test_ignored_files_are_not_work(tmp_path: Path) -> None:
    lay = make_layout(tmp_path)
    commit(lay.work, ".gitignore", "build/\n", "ignore build")
    lay.pull()
    (lay.work / "build").mkdir()
    (lay.work / "build" / "out.o").write_text("artifact")
    st = work_status(lay.paths, lay.name)
    assert (st.dirty, lost_work(st)) == (False, None)


def test_other_branches_and_the_stash_are_work_too(tmp_path: Path) -> None:
    lay = make_layout(tmp_path)
    git(lay.work, "checkout", "-q", "-b", "experiment")
    side = commit(lay.work, "x.txt", "x\n", "on a side branch")
    git(lay.work, "checkout", "-q", "hive/a")
    (lay.work / "README").write_text("stashed change\n")
    git(lay.work, "stash", "-q")
    st = work_status(lay.paths, lay.name)
    assert st.dirty is False
    assert st.unmerged_count is not None and st.unmerged_count >= 2  # the side commit, the stash's commits
    assert side in {c.id for c in st.unmerged}


def test_no_repo_every_commit_is_unkept(tmp_path: Path) -> None:
    lay = make_layout(tmp_path, with_repo=False)
    st = work_status(lay.paths, lay.name)
    assert (st.present, st.branch, st.head, st.ahead, st.unmerged_count, lost_work(st)) == (
        True, "hive/a", None, None, 0, None)
    oid = commit(lay.work, "f", "1\n", "first")
    st = work_status(lay.paths, lay.name)
    assert (st.unmerged_count, [c.id for c in st.unmerged]) == (1, [oid])
    assert "in a workspace with no repository" in (lost_work(st) or "")


def test_an_agent_without_a_workspace_has_nothing_to_lose(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path / "state")
    (paths.agents / "old" / "work").mkdir(parents=True)
    (paths.agents / "old" / "work" / "scratch").write_text("pre-workspace agents kept files loose")
    st = work_status(paths, AgentName("old"))
    assert (st.present, lost_work(st)) == (False, None)


def test_a_workspace_record_without_a_clone_is_unknown(tmp_path: Path) -> None:
    lay = make_layout(tmp_path)
    git(lay.work, "status")  # a real clone …
    shutil.rmtree(lay.work / ".git")  # … whose .git went away
    st = work_status(lay.paths, lay.name)
    assert st.unknown and "cannot be checked" in (lost_work(st) or "")


@pytest.mark.parametrize("record", [b"[]", b"{", json.dumps({"repo": "relative/path"}).encode(),
                                    json.dumps({"repo": None, "base": "HEAD~1"}).encode(),
                                    json.dumps({"repo": None, "branch": "../../x"}).encode()])
def test_a_bad_workspace_record_is_unknown(tmp_path: Path, record: bytes) -> None:
    lay = make_layout(tmp_path)
    (lay.paths.agents / "a" / "workspace.json").write_bytes(record)
    st = work_status(lay.paths, lay.name)
    assert st.unknown and lost_work(st) is not None


def test_a_linked_workspace_record_is_not_followed(tmp_path: Path) -> None:
    lay = make_layout(tmp_path)
    rec = lay.paths.agents / "a" / "workspace.json"
    (tmp_path / "elsewhere.json").write_text(rec.read_text())
    rec.unlink()
    rec.symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(ValueError):
        read_workspace(lay.paths, lay.name)
    assert work_status(lay.paths, lay.name).unknown


def test_the_cache_reuses_until_the_clone_changes(tmp_path: Path) -> None:
    lay = make_layout(tmp_path)
    first = cached_status(lay.paths, lay.name)
    assert cached_status(lay.paths, lay.name) is first  # nothing changed: no git runs
    with (lay.work / "README").open("a") as f:  # an edit in place: invisible to the telltale files,
        f.write("more\n")  # so the age decides
    assert cached_status(lay.paths, lay.name) is first
    assert cached_status(lay.paths, lay.name, max_age=0).dirty is True
    commit(lay.work, "n", "1\n", "new")  # a commit touches the index, HEAD's log, the ref
    assert cached_status(lay.paths, lay.name, max_age=3600).unmerged_count == 1
    lay.pull()  # so does a pull, in the operator's repo
    assert cached_status(lay.paths, lay.name, max_age=3600).unmerged_count == 0
    forget(lay.paths, lay.name)
    assert cached_status(lay.paths, lay.name) is not first
