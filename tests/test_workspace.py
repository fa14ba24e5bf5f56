"""Each agent's workspace (issue 14, item 1): the clone, its record, the pull.

Real git repos in tmp_path. Run as root (the production case) the clone is
given to an agent uid of its own and the pull reads it as that uid.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from support import passable
from test_config_repo import PLAIN_ENV, plain_git

from hyperhive.errors import BadRequest, Conflict
from hyperhive.names import AgentName
from hyperhive.paths import StatePaths
from hyperhive.sandbox.accounts import Account
from hyperhive.workspace import check_repo, create_workspace, parse_bundle_header, read_workspace
from hyperhive.workspace_pull import pull

ROOT = os.geteuid() == 0
UIDS = {"ag1": 47101, "ag2": 47102}


# e2e: through real git (clone, bundle, index-pack), an external tool, as setup.cfg's e2e marker says
pytestmark = pytest.mark.e2e


def account(name: str) -> Account | None:
    return Account(UIDS[name], UIDS[name], True) if ROOT else None


def owner(name: str) -> tuple[int, int] | None:
    return (UIDS[name], UIDS[name]) if ROOT else None


def as_agent(paths: StatePaths, name: str, *args: str, check: bool = True) -> str:
    """The agent's own git in its clone (its uid, its config): what it does inside."""
    r = subprocess.run(["git", "-C", str(paths.workspace(AgentName(name))), "-c", "user.name=ag",
                        "-c", "user.email=ag@x", *args], capture_output=True, env=PLAIN_ENV, timeout=30,
                       **({"user": UIDS[name], "group": UIDS[name], "extra_groups": []} if ROOT else {}))
    if check and r.returncode != 0:
        raise AssertionError(f"git {args} failed: {r.stderr.decode()}")
    return r.stdout.decode().strip()


def snapshot(repo: Path) -> dict[str, str]:
    """The operator's checkout: HEAD, the index and every work tree file, as bytes' hashes."""
    out = {"HEAD": (repo / ".git" / "HEAD").read_text(),
           "index": hashlib.sha256((repo / ".git" / "index").read_bytes()).hexdigest(),
           "head_commit": plain_git(repo, "rev-parse", "HEAD"),
           "branches": plain_git(repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads/main")}
    for p in sorted(repo.rglob("*")):
        if ".git" not in p.relative_to(repo).parts and p.is_file():
            out[str(p.relative_to(repo))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def op(tmp_path: Path) -> Path:
    return make_op(tmp_path)


@pytest.fixture
def paths(tmp_path: Path) -> StatePaths:
    return make_paths(tmp_path)


def make_op(tmp_path: Path) -> Path:
    """The operator's repo: two commits on main, an edited file and an untracked one."""
    repo = tmp_path / "op"
    repo.mkdir()
    plain_git(repo, "init", "-q", "-b", "main")
    (repo / "README").write_text("the operator's project\n")
    plain_git(repo, "add", "README")
    plain_git(repo, "commit", "-qm", "one")
    (repo / "src.txt").write_text("code\n")
    plain_git(repo, "add", "src.txt")
    plain_git(repo, "commit", "-qm", "two")
    (repo / "dirty.txt").write_text("the operator's uncommitted work\n")  # untracked, must stay
    (repo / "README").write_text("edited, not staged\n")
    return repo


def make_paths(tmp_path: Path) -> StatePaths:
    p = StatePaths(tmp_path / "state")
    for n in UIDS:
        p.workspace(AgentName(n)).mkdir(parents=True)
    passable(tmp_path / "state" / "agents")
    return p


def test_clone_on_its_branch(paths: StatePaths, op: Path) -> None:
    rec = create_workspace(paths, AgentName("ag1"), str(op), owner("ag1"))
    work = paths.workspace(AgentName("ag1"))
    assert rec is not None and rec == read_workspace(paths, AgentName("ag1"))
    assert rec.repo == str(op.resolve()) and rec.branch == "hive/ag1"
    assert rec.base == plain_git(op, "rev-parse", "HEAD")
    assert json.loads((paths.agent(AgentName("ag1")) / "workspace.json").read_text()) == {
        "repo": str(op.resolve()), "branch": "hive/ag1", "base": rec.base}
    assert as_agent(paths, "ag1", "symbolic-ref", "HEAD") == "refs/heads/hive/ag1"
    assert as_agent(paths, "ag1", "rev-parse", "HEAD") == rec.base
    assert as_agent(paths, "ag1", "status", "--porcelain") == ""
    assert (work / "README").read_text() == "the operator's project\n"  # the commit, not the dirty checkout
    assert not (work / "dirty.txt").exists()
    assert as_agent(paths, "ag1", "remote") == ""  # no origin pointing at the operator's repo
    assert as_agent(paths, "ag1", "for-each-ref", "--format=%(refname)") == "refs/heads/hive/ag1"
    assert not (work / ".git" / "hooks").exists()  # no template, no sample hooks
    assert not (work / ".git" / "objects" / "info" / "alternates").exists()
    op_inodes = {p.stat().st_ino for p in (op / ".git" / "objects").rglob("*") if p.is_file()}
    mine = [p for p in (work / ".git" / "objects").rglob("*") if p.is_file()]
    assert mine and not {p.stat().st_ino for p in mine} & op_inodes  # no hardlink
    if ROOT:
        for p in [work, *work.rglob("*")]:
            assert os.lstat(p).st_uid == UIDS["ag1"], p
        assert os.stat(work).st_mode & 0o777 == 0o700


def test_without_a_repo_an_empty_one(paths: StatePaths) -> None:
    rec = create_workspace(paths, AgentName("ag1"), None, owner("ag1"))
    assert rec is not None and (rec.repo, rec.branch, rec.base) == (None, "hive/ag1", None)
    assert as_agent(paths, "ag1", "symbolic-ref", "HEAD") == "refs/heads/hive/ag1"
    assert as_agent(paths, "ag1", "rev-parse", "-q", "--verify", "HEAD", check=False) == ""
    assert not (paths.workspace(AgentName("ag1")) / ".git" / "hooks").exists()
    with pytest.raises(BadRequest, match="no operator repository"):
        pull(paths, AgentName("ag1"), account("ag1"))


def test_kept_workspace_is_kept(paths: StatePaths, op: Path) -> None:
    first = create_workspace(paths, AgentName("ag1"), str(op), owner("ag1"))
    (paths.workspace(AgentName("ag1")) / "mine.txt").write_text("kept\n")
    assert create_workspace(paths, AgentName("ag1"), str(op), owner("ag1")) == first
    assert (paths.workspace(AgentName("ag1")) / "mine.txt").exists()


@pytest.mark.parametrize("bad", ["relative/path", "/no/such/repo", "/tmp\x00x"])
def test_bad_repo_changes_nothing(paths: StatePaths, bad: str) -> None:
    with pytest.raises(BadRequest):
        create_workspace(paths, AgentName("ag1"), bad, owner("ag1"))
    assert not any(paths.workspace(AgentName("ag1")).iterdir())
    assert read_workspace(paths, AgentName("ag1")) is None


def test_not_a_work_tree_or_inside_state(paths: StatePaths, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(BadRequest, match="not a git work tree"):
        check_repo(paths, str(plain))
    bare = tmp_path / "bare.git"
    plain_git(tmp_path, "init", "-q", "--bare", str(bare))
    with pytest.raises(BadRequest, match="not a git work tree"):
        check_repo(paths, str(bare))
    inside = paths.root / "sneaky"
    inside.mkdir(parents=True)
    plain_git(inside, "init", "-q")
    with pytest.raises(BadRequest, match="inside the state dir"):
        check_repo(paths, str(inside))
    other = paths.workspace(AgentName("ag2"))
    plain_git(other, "init", "-q")
    with pytest.raises(BadRequest, match="inside the state dir"):  # another agent's clone
        create_workspace(paths, AgentName("ag1"), str(other), owner("ag1"))
    link = tmp_path / "link"
    link.symlink_to(inside)
    with pytest.raises(BadRequest, match="inside the state dir"):
        check_repo(paths, str(link))


def test_pull_brings_the_commit_and_touches_nothing_else(paths: StatePaths, op: Path) -> None:
    create_workspace(paths, AgentName("ag1"), str(op), owner("ag1"))
    before = snapshot(op)
    work = paths.workspace(AgentName("ag1"))
    (work / "feature.txt").write_text("the agent's work\n")
    if ROOT:
        os.chown(work / "feature.txt", UIDS["ag1"], UIDS["ag1"])
    as_agent(paths, "ag1", "add", "feature.txt")
    as_agent(paths, "ag1", "commit", "-qm", "agent: feature")
    mine = as_agent(paths, "ag1", "rev-parse", "HEAD")
    res = pull(paths, AgentName("ag1"), account("ag1"))
    assert res.to_wire() == {"name": "ag1", "branch": "hive/ag1", "commit": mine, "ahead": 1}
    assert plain_git(op, "rev-parse", "refs/heads/hive/ag1") == mine
    assert plain_git(op, "show", "hive/ag1:feature.txt") == "the agent's work"
    assert snapshot(op) == before
    assert not (op / ".git" / "FETCH_HEAD").exists()
    assert plain_git(op, "for-each-ref", "--format=%(refname)") == "refs/heads/hive/ag1\nrefs/heads/main"
    # Nothing new: the same answer, nothing run.
    assert pull(paths, AgentName("ag1"), account("ag1")).to_wire() == res.to_wire()
    # A second commit goes as an increment (the bundle has the first as prerequisite).
    as_agent(paths, "ag1", "commit", "-q", "--allow-empty", "-m", "agent: more")
    again = pull(paths, AgentName("ag1"), account("ag1"))
    assert again.ahead == 2 and again.commit == as_agent(paths, "ag1", "rev-parse", "HEAD")
    assert snapshot(op) == before


def test_rewritten_branch_still_moves(paths: StatePaths, op: Path) -> None:
    create_workspace(paths, AgentName("ag1"), str(op), owner("ag1"))
    as_agent(paths, "ag1", "commit", "-q", "--allow-empty", "-m", "first try")
    pull(paths, AgentName("ag1"), account("ag1"))
    as_agent(paths, "ag1", "commit", "-q", "--amend", "--allow-empty", "-m", "second try")
    res = pull(paths, AgentName("ag1"), account("ag1"))
    assert res.rewritten and res.commit == as_agent(paths, "ag1", "rev-parse", "HEAD")
    assert plain_git(op, "log", "-1", "--format=%s", "hive/ag1") == "second try"


def test_a_branch_with_no_new_commit(paths: StatePaths, op: Path) -> None:
    create_workspace(paths, AgentName("ag1"), str(op), owner("ag1"))
    res = pull(paths, AgentName("ag1"), account("ag1"))  # hive/ag1 is the base: a ref, no bundle
    assert res.commit == plain_git(op, "rev-parse", "HEAD") and res.ahead == 0


def test_two_agents_two_clones_two_branches(paths: StatePaths, op: Path) -> None:
    for n in UIDS:
        create_workspace(paths, AgentName(n), str(op), owner(n))
        as_agent(paths, n, "commit", "-q", "--allow-empty", "-m", f"work of {n}")
        pull(paths, AgentName(n), account(n))
    for n in UIDS:
        assert plain_git(op, "log", "-1", "--format=%s", f"hive/{n}") == f"work of {n}"
    if ROOT:  # each clone is its own uid's, 0700: the other agent can neither read nor write it
        r = subprocess.run(["ls", str(paths.workspace(AgentName("ag2")))], capture_output=True,
                           user=UIDS["ag1"], group=UIDS["ag1"], extra_groups=[])
        assert r.returncode != 0 and b"Permission denied" in r.stderr


def test_bundle_header() -> None:
    oid = "a" * 40
    assert parse_bundle_header(f"# v2 git bundle\n-{'b' * 40} x\n{oid} refs/heads/hive/a\n\nPACK".encode()) == (
        ["b" * 40], {"refs/heads/hive/a": oid})
    assert parse_bundle_header(f"# v3 git bundle\n@object-format=sha1\n{oid} HEAD\n\n".encode())[1] == {"HEAD": oid}
    for bad in (b"PACK", b"# v2 git bundle\nnot-an-oid ref\n\n", b"# v2 git bundle\n" + oid.encode() + b" r\n"):
        with pytest.raises(BadRequest):
            parse_bundle_header(bad)


def test_no_workspace_no_pull(paths: StatePaths) -> None:
    with pytest.raises(BadRequest, match="has no workspace"):
        pull(paths, AgentName("ag1"), account("ag1"))


@pytest.mark.skipif(not ROOT, reason="the agent's own uid needs a root daemon")
def test_root_without_agent_uid_refused(paths: StatePaths, op: Path) -> None:
    create_workspace(paths, AgentName("ag1"), str(op), None)  # left root's
    with pytest.raises(Conflict, match="no uid of its own"):
        pull(paths, AgentName("ag1"), None)


def test_a_checked_out_branch_is_not_moved(paths: StatePaths, op: Path) -> None:
    create_workspace(paths, AgentName("ag1"), str(op), owner("ag1"))
    as_agent(paths, "ag1", "commit", "-q", "--allow-empty", "-m", "one")
    pull(paths, AgentName("ag1"), account("ag1"))
    plain_git(op, "checkout", "-q", "hive/ag1")
    before = snapshot(op)
    as_agent(paths, "ag1", "commit", "-q", "--allow-empty", "-m", "two")
    with pytest.raises(Conflict, match="checked out"):
        pull(paths, AgentName("ag1"), account("ag1"))
    assert snapshot(op) == before


@pytest.mark.skipif(not ROOT, reason="a root daemon and an operator of another uid")
def test_operator_repo_of_another_uid(paths: StatePaths, op: Path, tmp_path: Path) -> None:
    """The clone and the pull run in the operator's repo as its owner: what
    they write there is the operator's, and git's ownership check passes."""
    operator = 47199
    passable(tmp_path)
    subprocess.run(["chown", "-R", f"{operator}:{operator}", str(op)], check=True)
    create_workspace(paths, AgentName("ag1"), str(op), owner("ag1"))
    work = paths.workspace(AgentName("ag1"))
    (work / "new.txt").write_text("x\n")
    os.chown(work / "new.txt", UIDS["ag1"], UIDS["ag1"])
    as_agent(paths, "ag1", "add", "new.txt")
    as_agent(paths, "ag1", "commit", "-qm", "agent")
    assert pull(paths, AgentName("ag1"), account("ag1")).ahead == 1
    for p in (op / ".git").rglob("*"):
        assert os.lstat(p).st_uid == operator, p


def test_with_repo_checks_the_path_as_agent_json_does() -> None:
    from hyperhive.paths import AgentConfig
    from hyperhive.workspace import with_repo

    base = AgentConfig(allowed_recipients=("operator",))
    assert with_repo(base, None) is base
    assert with_repo(base, "/srv/project") == AgentConfig(allowed_recipients=("operator",), repo="/srv/project")
    for bad in ("relative", "/srv/../etc", "/srv/x\x00y", "/srv/a\nb", 3):
        with pytest.raises(BadRequest):
            with_repo(base, bad)
