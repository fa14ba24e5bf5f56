"""Each agent's workspace: a git repo at ``agents/<n>/work/`` on branch
``hive/<name>`` (issue 14), a clone of the operator's repository when the
agent was spawned with one, else empty. `hyperhive.workspace_pull` brings the
branch back.

The design, and why it is not ``git clone``:

- The clone is made by the daemon before the agent ever runs, from a bundle:
  ``git bundle create - HEAD`` in the operator's repo (as the uid that owns it,
  see `workspace_git`), then ``git init --template=`` in the fresh ``work/``
  and a fetch of that bundle. So the clone holds HEAD's history and nothing
  else of the operator's: no hardlink to an object file (a bundle is a pack
  stream, whatever ``--no-hardlinks`` would have had to guard), no hooks, no
  config, no alternates, no ``origin`` remote; and no ``git clone`` of a repo
  owned by another uid, which git (2.39.4 and later) refuses as root anyway.
  The tree is then the agent's uid's (`sandbox.accounts` gives the owners).
- The operator's repo is recorded for the daemon in ``agents/<n>/workspace.json``
  (daemon-owned, beside ``work/`` and ``state/``, where the agent cannot write):
  ``{"repo": "/abs/operator/repo" | null, "branch": "hive/<name>",
  "base": "<commit the clone started from>" | null}``. `read_workspace` reads it.
  Beside it ``workspace-pulled`` names the commit the last pull left on
  ``hive/<name>`` (`record_pull`): the branch that agent may move.
- A spawn is refused while the operator's repo has a ``hive/<name>`` its HEAD
  does not hold (`check_branch_free`): an earlier agent's unmerged work is
  never taken over, and overwritten, by a new agent of that name.
- Neither the operator's repo nor its ``.git`` is ever bound into a sandbox.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

import hyperhive.logs as logs
from hyperhive import workspace_git as wg
from hyperhive.config_git import FULL_ID
from hyperhive.errors import BadRequest, Conflict
from hyperhive.names import AgentName
from hyperhive.paths import AgentConfig, StatePaths
from hyperhive.sandbox.safefs import read_nofollow

__all__ = ["PULLED_FILE", "RECORD_FILE", "WorkspaceRecord", "branch_of", "check_branch_free", "check_repo",
           "create_workspace", "last_pull", "operator_git_dir", "operator_runner", "parse_bundle_header",
           "read_workspace", "record_pull", "with_repo"]

_log = logs.get("hyperhive.workspace")

RECORD_FILE = "workspace.json"
PULLED_FILE = "workspace-pulled"  # agents/<n>/: the commit its last pull left on hive/<name> (the daemon's)
CLONE_TIMEOUT = 600.0  # seconds for the bundle of the operator's HEAD and its fetch
HEADER_MAX = 1 << 16


@dataclass(frozen=True)
class WorkspaceRecord:
    repo: str | None  # the operator's repository (absolute), None for an empty workspace
    branch: str  # hive/<name>
    base: str | None  # the commit the clone started from; None when empty

    def to_json(self) -> str:
        return json.dumps({"repo": self.repo, "branch": self.branch, "base": self.base}, indent=2) + "\n"


def branch_of(name: AgentName) -> str:
    return f"hive/{name}"


def read_workspace(paths: StatePaths, name: AgentName) -> WorkspaceRecord | None:
    """The agent's workspace record, None when it has none (or it is not one
    the daemon wrote: read without following a link, checked)."""
    raw = read_nofollow(paths.agents, name, RECORD_FILE, limit=1 << 14)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    repo, branch, base = data.get("repo"), data.get("branch"), data.get("base")
    if (branch != branch_of(name) or not (repo is None or (isinstance(repo, str) and repo.startswith("/")))
            or not (base is None or (isinstance(base, str) and FULL_ID.fullmatch(base)))):
        return None
    return WorkspaceRecord(repo, branch, base)


def _write_daemon_file(paths: StatePaths, name: AgentName, file: str, text: str) -> None:
    f = paths.agent(name) / file
    tmp = f.with_name(file + ".tmp")
    tmp.unlink(missing_ok=True)
    tmp.write_text(text)
    os.chmod(tmp, 0o644)
    tmp.replace(f)


def _write_record(paths: StatePaths, name: AgentName, record: WorkspaceRecord) -> None:
    _write_daemon_file(paths, name, RECORD_FILE, record.to_json())


def record_pull(paths: StatePaths, name: AgentName, commit: str) -> None:
    """Note the commit a pull left on the agent's ``hive/<name>`` (its own, to move later)."""
    _write_daemon_file(paths, name, PULLED_FILE, commit + "\n")


def last_pull(paths: StatePaths, name: AgentName) -> str | None:
    """The commit the agent's last pull left on ``hive/<name>``, None before its first."""
    raw = read_nofollow(paths.agents, name, PULLED_FILE, limit=256)
    text = None if raw is None else raw.decode(errors="replace").strip()
    return text if text is not None and FULL_ID.fullmatch(text) else None


# --- the operator's repository -------------------------------------------------------------

def operator_git_dir(repo: Path) -> Path:
    """The git dir of the work tree at ``repo``: ``repo/.git`` itself, or where
    its ``gitdir:`` file points (a linked worktree). The operator's repo is
    the operator's: a gitfile there is followed, a bare repo is refused."""
    dot = repo / ".git"
    try:
        st = os.lstat(dot)
    except OSError:
        raise BadRequest(f"{repo} is not a git work tree (no .git)") from None
    if stat.S_ISDIR(st.st_mode):
        return dot
    if stat.S_ISREG(st.st_mode):
        text = dot.read_text(errors="replace").strip()
        if text.startswith("gitdir: "):
            target = Path(text[8:])
            return (target if target.is_absolute() else repo / target).resolve()
    raise BadRequest(f"{repo} is not a git work tree (.git is neither a directory nor a gitdir file)")


def operator_runner(git_dir: Path) -> wg.Runner:
    """The uid git runs as in the operator's repo: its owner's."""
    st = os.stat(git_dir)
    return wg.Runner(st.st_uid, st.st_gid)


def check_repo(paths: StatePaths, repo: object) -> Path:
    """The operator's repository an agent may be given: an absolute path to a
    git work tree outside the state dir, resolved. BadRequest otherwise."""
    if not isinstance(repo, str) or not repo.startswith("/") or any(c in repo for c in "\x00\n\r"):
        raise BadRequest("repo must be an absolute path (no NUL or line breaks)")
    try:
        top = Path(repo).resolve(strict=True)
    except (OSError, RuntimeError):
        raise BadRequest(f"repo {repo} does not exist") from None
    if not top.is_dir():
        raise BadRequest(f"repo {repo} is not a directory")
    git_dir = operator_git_dir(top)
    for what, state in (("state dir", paths.root.resolve()), ("agents dir", paths.agents.resolve())):
        for p in (top, git_dir):
            if p == state or state in p.parents:
                raise BadRequest(f"repo {repo} is inside the {what} {state}; give the operator's own repository")
    r = wg.run(str(git_dir), "rev-parse", "--is-bare-repository", runner=operator_runner(git_dir),
               work_tree=str(top), check=False, timeout=30)
    if r.returncode != 0 or r.stdout.strip() != b"false":
        raise BadRequest(f"repo {repo} is not a git work tree: {r.stderr or 'a bare repository'}")
    return top


def check_branch_free(top: Path, name: AgentName) -> None:
    """Conflict when the operator's repo at ``top`` already has ``hive/<name>`` with
    work its HEAD does not hold (an earlier agent of that name, purged before the
    operator merged it, or the operator's own branch): a new agent's pulls would
    overwrite it. A branch merged into HEAD is free to reuse."""
    git_dir = operator_git_dir(top)
    runner = operator_runner(git_dir)
    branch = branch_of(name)

    def oid(rev: str) -> str | None:
        r = wg.run(str(git_dir), "rev-parse", "--verify", "-q", rev, runner=runner, check=False, timeout=30)
        text = r.stdout.decode(errors="replace").strip()
        return text if r.returncode == 0 and FULL_ID.fullmatch(text) else None

    tip = oid(f"refs/heads/{branch}^{{commit}}")
    if tip is None:
        return
    head = oid("HEAD^{commit}")
    if head is not None and wg.run(str(git_dir), "merge-base", "--is-ancestor", tip, head, runner=runner,
                                   check=False, timeout=30).returncode == 0:
        return
    subject = wg.run(str(git_dir), "log", "-1", "--format=%s", tip, runner=runner, check=False,
                     timeout=30).stdout.decode(errors="replace").strip()[:100]
    raise Conflict(f"{top} already has a branch {branch} at {tip[:12]} ({subject!r}) that its HEAD does not "
                   f"hold (an earlier {name}'s work?): merge, rename or delete it before spawning {name} "
                   f"with this repository")


def with_repo(config: AgentConfig, repo: object) -> AgentConfig:
    """``config`` with the spawn's ``repo`` (None: as it is), the path checked
    by agent.json's own rule (pure: whether it is a work tree is `check_repo`'s)."""
    if repo is None:
        return config
    if not isinstance(repo, str):
        raise BadRequest("repo must be a path")
    checked = AgentConfig.from_json(json.dumps({"repo": repo}), where="the requested config").repo
    return dataclasses.replace(config, repo=checked)


def parse_bundle_header(head: bytes) -> tuple[list[str], dict[str, str]]:
    """(prerequisites, {ref: oid}) of a v2/v3 bundle's header (pure); BadRequest
    when it is not one."""
    end = head.find(b"\n\n")
    if end < 0:
        raise BadRequest("not a git bundle (no end to its header)")
    lines = head[:end].decode(errors="replace").split("\n")
    if lines[0] not in ("# v2 git bundle", "# v3 git bundle"):
        raise BadRequest("not a git bundle")
    prereqs: list[str] = []
    refs: dict[str, str] = {}
    for line in lines[1:]:
        if line.startswith("@"):
            continue  # v3 capabilities (object-format, filter)
        if line.startswith("-"):
            prereqs.append(line[1:].split(" ", 1)[0])
            continue
        oid, _, ref = line.partition(" ")
        if not FULL_ID.fullmatch(oid) or not ref or ref in refs:
            raise BadRequest("a git bundle with a malformed header")
        refs[ref] = oid
    return prereqs, refs


def read_header(f: Path) -> bytes:
    with open(f, "rb") as fh:
        return fh.read(HEADER_MAX)


# --- creating it ------------------------------------------------------------------------------

def _fresh_dir(work: Path) -> bool:
    """``work`` is a real directory with nothing in it (made at once if absent)."""
    work.mkdir(parents=True, exist_ok=True)
    st = os.lstat(work)
    if not stat.S_ISDIR(st.st_mode):
        raise BadRequest(f"{work} is not a directory")
    return not any(os.scandir(work))


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    """Give ``top`` and everything under it to uid:gid, never following a link."""
    os.chown(top, uid, gid, follow_symlinks=False)
    for root, dirs, files in os.walk(top, followlinks=False):
        for n in (*dirs, *files):
            os.chown(os.path.join(root, n), uid, gid, follow_symlinks=False)


def _clone_head(git_dir: Path, top: Path, work: Path, branch: str) -> str | None:
    """Fetch the operator's HEAD into the fresh repo at ``work`` as ``branch``
    (through a bundle) and check it out: the commit, or None (an unborn HEAD)."""
    runner = operator_runner(git_dir)
    head = wg.run(str(git_dir), "rev-parse", "--verify", "-q", "HEAD^{commit}", runner=runner, check=False)
    if head.returncode != 0:
        return None  # an empty repository: the workspace starts empty too
    tmp = Path(tempfile.mkdtemp(prefix="hive-clone-"))
    try:
        bundle = tmp / "head.bundle"
        with open(bundle, "wb") as out:
            wg.stream_to(out, str(git_dir), "bundle", "create", "--quiet", "-", "HEAD", runner=runner,
                         timeout=CLONE_TIMEOUT)
        _, refs = parse_bundle_header(read_header(bundle))
        base = refs.get("HEAD")
        if base is None:
            raise BadRequest(f"the bundle of {top}'s HEAD names no HEAD")
        mine = str(work / ".git")
        wg.run(mine, "fetch", "-q", "--update-head-ok", "--no-tags", "--no-write-fetch-head",
               "--no-recurse-submodules", str(bundle), f"+HEAD:refs/heads/{branch}",
               extra=wg.FETCH_CONFIG, timeout=CLONE_TIMEOUT)
        wg.run(mine, "reset", "-q", "--hard", work_tree=str(work), timeout=CLONE_TIMEOUT)
        return base
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def create_workspace(paths: StatePaths, name: AgentName, repo: str | None,
                     owner: tuple[int, int] | None = None) -> WorkspaceRecord | None:
    """Make the agent's workspace in its fresh ``work/``: a clone of ``repo``'s
    HEAD on ``hive/<name>``, or (no repo) an empty repo on that branch; record
    it; give the tree to ``owner`` (uid, gid; None: leave it the daemon's).

    A workspace already made (a revived agent) is kept as it is: its record is
    returned; a ``work/`` with files but no record (made before workspaces) is
    left alone (None). Bad input (``check_repo``; a ``hive/<name>`` there with
    work HEAD lacks, `check_branch_free`) changes nothing; a failure half-way
    empties ``work/`` again."""
    kept = read_workspace(paths, name)
    if kept is not None:
        return kept
    top = check_repo(paths, repo) if repo is not None else None
    if top is not None:
        check_branch_free(top, name)
    work = paths.workspace(name)
    if not _fresh_dir(work):
        _log.warning("workspace.not_fresh", agent=name, work=str(work))
        return None
    branch = branch_of(name)
    try:
        wg.run(str(work / ".git"), "init", "-q", "--template=", f"--initial-branch={branch}",
               work_tree=str(work))
        base = _clone_head(operator_git_dir(top), top, work, branch) if top is not None else None
        record = WorkspaceRecord(str(top) if top is not None else None, branch, base)
        if owner is not None and os.geteuid() == 0:
            _chown_tree(work, *owner)
        os.chmod(work, 0o700)
        _write_record(paths, name, record)
    except BaseException:
        for entry in os.scandir(work):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
        raise
    _log.info("workspace.created", agent=name, repo=record.repo, branch=branch, base=base)
    return record
