"""A hostile clone (issue 14, item 1): everything an agent can plant in its
``work/.git`` before the daemon pulls its branch back. None of it runs a
command (a marker file the command would create never appears, whatever uid
it would have run as), none makes the daemon read another repo; each is
refused or harmless, and the operator's checkout never changes.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from test_config_repo import HOOKS, plain_git, script
from test_workspace import UIDS, account, as_agent, make_op, make_paths, owner, snapshot

from hyperhive.errors import BadRequest, Conflict, HiveError
from hyperhive.names import AgentName
from hyperhive.paths import StatePaths
from hyperhive.workspace import create_workspace
from hyperhive.workspace_pull import pull

A = AgentName("ag1")


# e2e: through real git (clone, bundle, index-pack), an external tool, as setup.cfg's e2e marker says
pytestmark = pytest.mark.e2e


@pytest.fixture
def op(tmp_path: Path) -> Path:
    return make_op(tmp_path)


@pytest.fixture
def paths(tmp_path: Path) -> StatePaths:
    return make_paths(tmp_path)


@pytest.fixture
def marks(tmp_path: Path) -> Path:
    d = tmp_path / "marks"
    d.mkdir()
    os.chmod(d, 0o777)  # writable by any uid: a command that ran at all leaves its mark
    return d / "ran"


def agent_file(paths: StatePaths, rel: str, text: str, mode: int = 0o644) -> Path:
    """A file the agent wrote in its clone (its own uid's)."""
    f = paths.workspace(A) / rel
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(text)
    f.chmod(mode)
    if os.geteuid() == 0:
        for p in [f, *f.parents]:
            if p == paths.workspace(A):
                break
            os.chown(p, UIDS["ag1"], UIDS["ag1"], follow_symlinks=False)
    return f


def committed(paths: StatePaths) -> str:
    as_agent(paths, "ag1", "commit", "-q", "--allow-empty", "-m", "agent work")
    return as_agent(paths, "ag1", "rev-parse", "HEAD")


def test_config_hooks_and_aliases_run_nothing(paths: StatePaths, op: Path, marks: Path, tmp_path: Path) -> None:
    create_workspace(paths, A, str(op), owner("ag1"))
    commit = committed(paths)
    for h in HOOKS:  # the operator's repo's own hooks do not run either
        script(op / ".git" / "hooks" / h, marks)
    tool = script(tmp_path / "marks" / "tool", marks)
    hooks = tmp_path / "marks" / "hooks"
    for h in (*HOOKS, "reference-transaction", "post-index-change"):
        script(hooks / h, marks)
        agent_file(paths, f".git/hooks/{h}", f"#!/bin/sh\necho hook >> {marks}\n", 0o755)
    evil = {
        "core.fsmonitor": str(tool), "core.hooksPath": str(hooks), "alias.bundle": f"!{tool}",
        "alias.rev-parse": f"!{tool}", "core.pager": str(tool), "pager.bundle": str(tool),
        "core.sshCommand": str(tool), "uploadpack.packObjectsHook": str(tool),
        "core.alternateRefsCommand": str(tool), "credential.helper": f"!{tool}",
        "remote.origin.url": f"ext::{tool}", "extensions.partialClone": "origin",
        "gpg.program": str(tool), "core.askPass": str(tool), "pack.threads": "64",
        "pack.windowMemory": "0", "core.worktree": str(tmp_path / "elsewhere"),
    }
    inc = agent_file(paths, "evil.inc", "".join(f"[{k.rsplit('.', 1)[0]}]\n\t{k.rsplit('.', 1)[1]} = {v}\n"
                                               for k, v in evil.items() if k.startswith("core.")))
    cfg = (paths.workspace(A) / ".git" / "config")
    cfg.write_text(cfg.read_text() + f"[include]\n\tpath = {inc}\n")
    for key, value in evil.items():
        as_agent(paths, "ag1", "config", key, value)
    assert not marks.exists()
    before = snapshot(op)
    # A config that includes other files is refused outright (git opens an included
    # file wherever it points: a FIFO would hold the pull), and nothing runs.
    with pytest.raises(HiveError, match="includes other files"):
        pull(paths, A, account("ag1"))
    assert not marks.exists(), marks.read_text()
    assert snapshot(op) == before
    cfg.write_text(cfg.read_text().replace(f"[include]\n\tpath = {inc}\n", ""))
    res = pull(paths, A, account("ag1"))
    assert res.commit == commit and plain_git(op, "rev-parse", "hive/ag1") == commit
    assert not marks.exists(), marks.read_text()
    assert snapshot(op) == before


@pytest.mark.parametrize("how", ["gitdir", "symlink"])
def test_swapped_dot_git_is_refused(paths: StatePaths, op: Path, how: str) -> None:
    """A ``.git`` that sends git elsewhere: another agent's clone, here."""
    create_workspace(paths, A, str(op), owner("ag1"))
    create_workspace(paths, AgentName("ag2"), str(op), owner("ag2"))
    as_agent(paths, "ag2", "commit", "-q", "--allow-empty", "-m", "ag2's secret")
    other = paths.workspace(AgentName("ag2")) / ".git"
    dot = paths.workspace(A) / ".git"
    shutil.rmtree(dot)
    if how == "gitdir":
        agent_file(paths, ".git", f"gitdir: {other}\n")
    else:
        dot.symlink_to(other)
        if os.geteuid() == 0:
            os.chown(dot, UIDS["ag1"], UIDS["ag1"], follow_symlinks=False)
    with pytest.raises(Conflict, match="not a plain directory"):
        pull(paths, A, account("ag1"))
    assert plain_git(op, "rev-parse", "-q", "--verify", "hive/ag1", check=False) == ""


@pytest.mark.parametrize("target", ["operator", "other agent"])
def test_alternates_are_refused(paths: StatePaths, op: Path, target: str) -> None:
    create_workspace(paths, A, str(op), owner("ag1"))
    create_workspace(paths, AgentName("ag2"), str(op), owner("ag2"))
    where = op / ".git" / "objects" if target == "operator" else paths.workspace(AgentName("ag2")) / ".git/objects"
    committed(paths)
    agent_file(paths, ".git/objects/info/alternates", f"{where}\n")
    with pytest.raises(Conflict, match="borrows objects"):
        pull(paths, A, account("ag1"))
    assert plain_git(op, "rev-parse", "-q", "--verify", "hive/ag1", check=False) == ""


def test_commondir_is_refused(paths: StatePaths, op: Path) -> None:
    create_workspace(paths, A, str(op), owner("ag1"))
    create_workspace(paths, AgentName("ag2"), str(op), owner("ag2"))
    agent_file(paths, ".git/commondir", f"{paths.workspace(AgentName('ag2')) / '.git'}\n")
    with pytest.raises(Conflict, match="borrows objects"):
        pull(paths, A, account("ag1"))


@pytest.mark.skipif(os.geteuid() != 0, reason="ownership is the root daemon's check")
def test_a_git_dir_not_the_agents_is_refused(paths: StatePaths, op: Path) -> None:
    create_workspace(paths, A, str(op), owner("ag1"))
    os.chown(paths.workspace(A) / ".git", 0, 0)
    with pytest.raises(Conflict, match="owned by uid"):
        pull(paths, A, account("ag1"))


def test_oversized_bundle_is_refused(paths: StatePaths, op: Path) -> None:
    create_workspace(paths, A, str(op), owner("ag1"))
    agent_file(paths, "big.bin", os.urandom(200_000).hex())
    as_agent(paths, "ag1", "add", "big.bin")
    committed(paths)
    before = snapshot(op)
    with pytest.raises(BadRequest, match="more than 4096 bytes"):
        pull(paths, A, account("ag1"), max_bytes=4096)
    assert plain_git(op, "rev-parse", "-q", "--verify", "hive/ag1", check=False) == ""
    assert snapshot(op) == before


def test_symbolic_branch_writes_only_its_ref(paths: StatePaths, op: Path) -> None:
    """``hive/ag1`` made a symref to another branch: the operator's repo still
    gets one ref, ``hive/ag1``, or none."""
    create_workspace(paths, A, str(op), owner("ag1"))
    as_agent(paths, "ag1", "checkout", "-q", "-b", "other")
    committed(paths)
    as_agent(paths, "ag1", "symbolic-ref", "refs/heads/hive/ag1", "refs/heads/other")
    try:
        pull(paths, A, account("ag1"))
    except HiveError:
        pass
    assert plain_git(op, "for-each-ref", "--format=%(refname)") in (
        "refs/heads/main", "refs/heads/hive/ag1\nrefs/heads/main")


@pytest.mark.parametrize("entry", [".GIT", ".gitmodules"])
def test_malformed_objects_are_refused(paths: StatePaths, op: Path, entry: str) -> None:
    """A tree with a ``.GIT`` entry (what would plant a repo in a checkout), a
    ``.gitmodules`` whose submodule name climbs out: fsck refuses the bundle."""
    create_workspace(paths, A, str(op), owner("ag1"))
    agent_file(paths, "x", '[submodule "../../../evil"]\n\tpath = evil\n\turl = ./evil\n')
    blob = as_agent(paths, "ag1", "hash-object", "-w", "x")
    tree = _mktree(paths, f"100644 blob {blob}\t{entry}\n")
    commit = as_agent(paths, "ag1", "commit-tree", tree, "-m", "evil")
    as_agent(paths, "ag1", "update-ref", "refs/heads/hive/ag1", commit)
    with pytest.raises(Conflict, match="refused by the operator"):
        pull(paths, A, account("ag1"))
    assert plain_git(op, "rev-parse", "-q", "--verify", "hive/ag1", check=False) == ""


def _mktree(paths: StatePaths, spec: str) -> str:
    import subprocess

    from test_config_repo import PLAIN_ENV
    r = subprocess.run(["git", "-C", str(paths.workspace(A)), "mktree"], input=spec.encode(), capture_output=True,
                       env=PLAIN_ENV, timeout=30, check=True,
                       **({"user": UIDS["ag1"], "group": UIDS["ag1"], "extra_groups": []}
                          if os.geteuid() == 0 else {}))
    return r.stdout.decode().strip()
