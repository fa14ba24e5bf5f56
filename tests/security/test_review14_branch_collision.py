"""Review of issue 14: a new agent's first pull overwrites a ``hive/<name>``
it did not write.

The operator's repo may already hold ``hive/<name>``: the work of an earlier
agent of that name (destroyed and purged: purge lets go of work that was
pulled, since it is "kept" in the operator's repo) that the operator has not
merged yet, or a branch of the operator's own. ``create_workspace`` clones
from HEAD without looking, and the new agent's first pull moves the branch to
its own unrelated commit (logged only as ``workspace.pull_rewrote``): the old
work is gone from every branch (only the reflog still has it). That is the
data loss issue 14 means to prevent.

Proposed fix (hyperhive/workspace.py ``create_workspace``, ~line 249): refuse
a spawn whose ``hive/<name>`` exists in the operator's repo and is not an
ancestor of HEAD (Conflict naming the branch and its commits), or start the
clone from it; and in workspace_pull.py ``pull`` (~line 140), refuse a first
pull (``record`` has no pulled commit yet) that is not a descendant of the
existing branch.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_config_repo import plain_git
from test_workspace import account, as_agent, make_op, make_paths, owner

from hyperhive.errors import Conflict, HiveError
from hyperhive.names import AgentName
from hyperhive.workspace import create_workspace, read_workspace
from hyperhive.workspace_pull import pull

A = AgentName("ag1")


# e2e: through real git (clone, bundle, index-pack), an external tool, as setup.cfg's e2e marker says
pytestmark = pytest.mark.e2e


def test_an_existing_unmerged_hive_branch_is_not_overwritten(tmp_path: Path) -> None:
    op, paths = make_op(tmp_path), make_paths(tmp_path)
    # The earlier ag1's work, pulled before it was purged: on hive/ag1 only, not merged.
    plain_git(op, "checkout", "-q", "-b", "hive/ag1")
    (op / "earlier.txt").write_text("the earlier agent's work\n")
    plain_git(op, "add", "earlier.txt")
    plain_git(op, "commit", "-qm", "earlier ag1's work")
    earlier = plain_git(op, "rev-parse", "HEAD")
    plain_git(op, "checkout", "-q", "main")
    try:
        create_workspace(paths, A, str(op), owner("ag1"))
        as_agent(paths, "ag1", "commit", "-q", "--allow-empty", "-m", "the new ag1's work")
        pull(paths, A, account("ag1"))
    except HiveError:
        pass  # refusing is fine
    kept = plain_git(op, "for-each-ref", "--contains", earlier, "--format=%(refname)", "refs/heads")
    assert kept, "the earlier hive/ag1 work is on no branch any more"


def test_the_spawn_is_refused_naming_the_branch_and_changes_nothing(tmp_path: Path) -> None:
    op, paths = make_op(tmp_path), make_paths(tmp_path)
    plain_git(op, "branch", "hive/ag1", "main")
    plain_git(op, "commit", "-q", "--allow-empty", "-m", "not yet")  # main moves on: hive/ag1 is merged
    plain_git(op, "checkout", "-q", "hive/ag1")
    plain_git(op, "commit", "-q", "--allow-empty", "-m", "the operator's own")  # now it is not
    tip = plain_git(op, "rev-parse", "HEAD")
    plain_git(op, "checkout", "-q", "main")
    with pytest.raises(Conflict, match=f"hive/ag1 at {tip[:12]}"):
        create_workspace(paths, A, str(op), owner("ag1"))
    assert read_workspace(paths, A) is None
    assert not paths.workspace(A).exists() or not any(paths.workspace(A).iterdir())
    assert plain_git(op, "rev-parse", "hive/ag1") == tip


def test_a_merged_hive_branch_is_reused(tmp_path: Path) -> None:
    op, paths = make_op(tmp_path), make_paths(tmp_path)
    plain_git(op, "branch", "hive/ag1", "main~1")  # an earlier ag1's work, merged long ago
    create_workspace(paths, A, str(op), owner("ag1"))
    as_agent(paths, "ag1", "commit", "-q", "--allow-empty", "-m", "the new ag1's work")
    assert pull(paths, A, account("ag1")).ahead == 1


def test_a_pull_does_not_overwrite_commits_put_on_the_branch_by_someone_else(tmp_path: Path) -> None:
    op, paths = make_op(tmp_path), make_paths(tmp_path)
    create_workspace(paths, A, str(op), owner("ag1"))
    as_agent(paths, "ag1", "commit", "-q", "--allow-empty", "-m", "one")
    first = pull(paths, A, account("ag1")).commit
    assert first is not None
    # The operator puts a commit of theirs on hive/ag1 (not merged into main).
    plain_git(op, "checkout", "-q", "hive/ag1")
    plain_git(op, "commit", "-q", "--allow-empty", "-m", "the operator's fix on the agent's branch")
    theirs = plain_git(op, "rev-parse", "HEAD")
    plain_git(op, "checkout", "-q", "main")
    as_agent(paths, "ag1", "commit", "-q", "--amend", "--allow-empty", "-m", "one, rewritten")
    with pytest.raises(Conflict, match="not overwritten"):
        pull(paths, A, account("ag1"))
    assert plain_git(op, "rev-parse", "hive/ag1") == theirs
    # The agent's own rewrite of what it pulled still moves its branch.
    plain_git(op, "update-ref", "refs/heads/hive/ag1", first)
    r = pull(paths, A, account("ag1"))
    assert r.rewritten and r.commit == as_agent(paths, "ag1", "rev-parse", "HEAD")
