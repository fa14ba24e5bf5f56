"""Fetching an agent's branch back into the operator's repository (issue 14):
after every turn and on ``hive pull NAME``.

The daemon never runs git in the agent's clone with its own privileges: the
clone, its config included, is the agent's. So:

1. ``work/`` and ``work/.git`` must be plain directories owned by the agent
   (a ``gitdir:`` file or a link could point the call at another repo), with
   no ``objects/info/alternates`` (borrowed objects);
2. the daemon reads the branch's commit itself, link-proof
   (`workspace_status_refs.read_branch_tip`: ``config``, ``HEAD``, the ref and
   ``packed-refs`` must be regular files of the agent's, so no FIFO holds a
   pull); then as the agent's uid, with `config_git`'s settings on top of the
   repo's (no hooks, fsmonitor, transport; `workspace_git.AGENT_CONFIG`), git
   writes a bundle of ``refs/heads/hive/<name>`` to a pipe, less what the
   operator's repo already has; the daemon copies it into a temp file of its
   own, at most ``max_bytes``, ``timeout`` seconds, and ``idle`` seconds with
   no output (a FIFO swapped in after the checks holds git silent);
3. the bundle's header must name that one ref and nothing else, and start
   only from commits the operator's repo has;
4. in the operator's repo, as its owner: the bundle's pack goes to
   ``git index-pack --stdin --fix-thin --strict`` (every object checked: a
   fetch from a bundle does not fsck before git 2.45) in a quarantine objects
   dir, bounded (``GIT_ALLOC_LIMIT``, one thread, RLIMIT_AS: a delta bomb
   dies, it does not take the host's memory); the new tip is checked for
   connectivity (``rev-list --objects <tip> --not --all``) and to be a commit,
   and only then is the pack moved into the repo's store (a refused one
   leaves nothing); then ``update-ref`` writes the one ref
   ``refs/heads/hive/<name>``, only if it still holds what was read before,
   with no reflog: no FETCH_HEAD, no tags, no other ref, never the checkout,
   the index or another branch (a ``hive/<name>`` the operator has checked out
   in any worktree is refused). A branch the agent rewrote still moves (it is
   the agent's branch; the log says so, and its old tips are garbage for the
   operator's gc), but a ``hive/<name>`` the agent did not put there (not its
   last pull, ``agents/<n>/workspace-pulled``, nor in its base, the repo's HEAD
   or its new commit: an earlier agent's of that name, the operator's commits)
   is never overwritten.

Whatever the agent planted there (config, hooks, aliases, alternates, a
swapped ``.git``) can at worst change what the agent's own uid reads or
bundles: into the operator's repo goes the agent's own branch, checked.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hyperhive.logs as logs
from hyperhive import workspace_git as wg
from hyperhive.config_git import FULL_ID
from hyperhive.errors import BadRequest, Conflict
from hyperhive.names import AgentName
from hyperhive.paths import StatePaths
from hyperhive.workspace import (
    check_repo,
    last_pull,
    operator_git_dir,
    operator_runner,
    parse_bundle_header,
    read_header,
    read_workspace,
    record_pull,
)
from hyperhive.workspace_status_refs import RefsUnreadable, read_branch_tip

__all__ = ["MAX_BUNDLE_BYTES", "PULL_IDLE", "PULL_TIMEOUT", "PullResult", "agent_runner", "carried_by", "pull"]

_log = logs.get("hyperhive.workspace")

MAX_BUNDLE_BYTES = 1 << 30  # one pull's bundle at most
# What the operator-side ``index-pack`` of an agent's pack may take: a delta can say "this blob,
# 256 times" in a few bytes, and index-pack must build the result to check it. One allocation at
# most ALLOC_LIMIT (git dies "attempting to allocate … over limit"), one thread, bounded pack
# windows and caches, and INDEX_MAX_AS bytes of address space in all (RLIMIT_AS).
ALLOC_LIMIT = "256m"
INDEX_MAX_AS = 2 << 30
INDEX_CONFIG: tuple[tuple[str, str], ...] = (
    ("pack.threads", "1"),
    ("core.bigFileThreshold", "64m"),  # bigger blobs are streamed, not held
    ("core.deltaBaseCacheLimit", "96m"),
    ("core.packedGitWindowSize", "32m"),
    ("core.packedGitLimit", "256m"),
)
PULL_TIMEOUT = 300.0  # seconds for one pull's bundle (and as long again for its fetch)
# Seconds the agent's ``bundle create`` may go without writing: a git held on a FIFO the agent
# swapped in after the checks writes nothing, and is not given the whole PULL_TIMEOUT.
PULL_IDLE = 60.0


@dataclass(frozen=True)
class PullResult:
    name: str
    branch: str
    commit: str | None  # hive/<name> in the operator's repo now; None when the agent has no commit yet
    ahead: int | None  # its commits not in the operator's HEAD
    rewritten: bool = False  # the agent's branch no longer contains what the operator had of it
    carried: int = 0  # bytes of the agent's bundle brought over (0: nothing new)

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name, "branch": self.branch, "commit": self.commit, "ahead": self.ahead}


def agent_runner(paths: StatePaths, name: AgentName, account: Any) -> tuple[wg.Runner, Path]:
    """Who reads the agent's clone, and its git dir: the agent's uid (``account``,
    a `sandbox.accounts.Account` or None) when the daemon switches uids, else
    the daemon's own. Refuses a ``work/.git`` that is not a plain directory of
    that uid, and borrowed objects."""
    work = paths.workspace(name)
    git_dir = work / ".git"
    if account is not None and account.switch:
        uid, runner = account.uid, wg.Runner(account.uid, account.gid)
    else:
        uid, runner = os.geteuid(), wg.Runner()
    if os.geteuid() == 0 and uid == 0 and account is None:
        raise Conflict(f"{name} has no uid of its own: its clone is not read as root")
    for p in (work, git_dir, git_dir / "objects"):
        try:
            st = os.lstat(p)
        except OSError:
            raise Conflict(f"{name}'s workspace has no git repository ({p} is missing)") from None
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
            raise Conflict(f"{name}'s workspace is refused: {p} is not a plain directory owned by uid {uid}")
    for p in (git_dir / "objects" / "info" / "alternates", git_dir / "commondir"):
        if os.path.lexists(p):
            raise Conflict(f"{name}'s workspace is refused: it borrows objects from elsewhere ({p.name})")
    return runner, git_dir


def _oid(r: wg.GitResult) -> str | None:
    text = r.stdout.decode(errors="replace").strip()
    return text if r.returncode == 0 and FULL_ID.fullmatch(text) else None


def carried_by(exc: BaseException) -> int:
    """Bytes of the agent's bundle a refused pull brought into the daemon's temp file
    and the operator's quarantine before it was refused (0: none)."""
    n = getattr(exc, "carried", 0)
    return n if isinstance(n, int) else 0


def _op(git_dir: Path, runner: wg.Runner, *args: str, check: bool = False,
        extra: tuple[tuple[str, str], ...] = ()) -> wg.GitResult:
    return wg.run(str(git_dir), *args, runner=runner, check=check, extra=extra, timeout=PULL_TIMEOUT)


def _ahead(git_dir: Path, runner: wg.Runner, ref: str) -> int | None:
    head = _oid(_op(git_dir, runner, "rev-parse", "--verify", "-q", "HEAD^{commit}"))
    r = _op(git_dir, runner, "rev-list", "--count", ref, *(["^" + head] if head else []))
    text = r.stdout.decode(errors="replace").strip()
    return int(text) if r.returncode == 0 and text.isdigit() else None


def _refuse_checked_out(op_git: Path, op_runner: wg.Runner, ref: str) -> None:
    """The operator's checkouts are never moved: a ``hive/<name>`` checked out
    in the repo or one of its worktrees is not updated."""
    r = _op(op_git, op_runner, "worktree", "list", "--porcelain")
    if f"branch {ref}".encode() in r.stdout.splitlines() or r.returncode != 0:
        raise Conflict(f"{ref} is checked out in the operator's repository: it is not moved under a checkout")


def pull(paths: StatePaths, name: AgentName, account: Any = None, *, max_bytes: int = MAX_BUNDLE_BYTES,
         timeout: float = PULL_TIMEOUT, idle: float = PULL_IDLE) -> PullResult:
    """Fetch the agent's ``hive/<name>`` into the operator's repo (see the
    module's doc). BadRequest or Conflict, with the reason, when it cannot."""
    record = read_workspace(paths, name)
    if record is None:
        raise BadRequest(f"{name} has no workspace")
    if record.repo is None:
        raise BadRequest(f"{name}'s workspace has no operator repository to pull into")
    top = check_repo(paths, record.repo)
    op_git = operator_git_dir(top)
    op_runner = operator_runner(op_git)
    runner, git_dir = agent_runner(paths, name, account)
    ref = f"refs/heads/{record.branch}"
    try:  # read by the daemon, link-proof: no git of the agent's runs for it (a FIFO there would hold it)
        commit = read_branch_tip(git_dir.parent, ref)
    except RefsUnreadable as exc:
        raise Conflict(f"{name}'s workspace is refused: {exc}") from None
    old = _oid(_op(op_git, op_runner, "rev-parse", "--verify", "-q", f"{ref}^{{commit}}"))
    if commit is None or commit == old:
        if commit is not None:
            record_pull(paths, name, commit)
        return PullResult(name, record.branch, old, _ahead(op_git, op_runner, ref) if old else None)
    _refuse_checked_out(op_git, op_runner, ref)
    own = old is None or _own(old, (last_pull(paths, name), record.base, "HEAD"), op_git, op_runner)
    carried = 0
    if _op(op_git, op_runner, "cat-file", "-t", commit).stdout.strip() != b"commit":
        commit, carried = _carry(name, ref, (old, record.base), runner, git_dir, op_git, op_runner, max_bytes,
                                 timeout, idle)
    if old is not None and not own and not _own(old, (commit,), op_git, op_runner):
        raise Conflict(f"{ref} in the operator's repository is at {old[:12]}, which {name} did not pull there "
                       f"and which neither its HEAD nor {name}'s branch holds: it is not overwritten (merge, "
                       f"rename or delete that branch)")
    # The one ref written, only if it still is what was read above; with no reflog (a rewritten
    # branch's old tips are the agent's throw-aways: unreachable, the operator's gc prunes them).
    _drop_reflog(op_git, op_runner, ref)
    _op(op_git, op_runner, "update-ref", "--no-deref", ref, commit, old or "0" * len(commit), check=True,
        extra=(("core.logAllRefUpdates", "false"),))
    record_pull(paths, name, commit)
    rewritten = bool(old and _op(op_git, op_runner, "merge-base", "--is-ancestor", old, commit).returncode)
    if rewritten:
        _log.warning("workspace.pull_rewrote", agent=name, branch=record.branch, was=old, now=commit)
    ahead = _ahead(op_git, op_runner, ref)
    _log.info("workspace.pulled", agent=name, branch=record.branch, commit=commit, ahead=ahead, repo=str(top))
    return PullResult(name, record.branch, commit, ahead, rewritten, carried)


def _own(old: str, holders: tuple[str | None, ...], op_git: Path, op_runner: wg.Runner) -> bool:
    """Moving ``hive/<name>`` off ``old`` loses nothing but the agent's own work: ``old``
    is its last pull (the first holder) or in one of ``holders`` (its base, the
    operator's HEAD, its new commit: a fast-forward). Else it is someone else's (an
    earlier agent's of that name, the operator's commits on it): not overwritten."""
    if old == holders[0]:
        return True
    return any(h and _op(op_git, op_runner, "merge-base", "--is-ancestor", old, h).returncode == 0
               for h in holders)


def _drop_reflog(op_git: Path, op_runner: wg.Runner, ref: str) -> None:
    """Remove the reflog of ``ref`` (``refs/heads/hive/<name>``) in the operator's repo, if any:
    git appends to an existing log whatever ``core.logAllRefUpdates`` says."""
    log = _objects_dir(op_git, op_runner).parent / "logs" / ref
    try:
        if stat.S_ISREG(os.lstat(log).st_mode):
            os.unlink(log)
    except FileNotFoundError:
        pass


def _carry(name: AgentName, ref: str, have: tuple[str | None, str | None], runner: wg.Runner, git_dir: Path,
           op_git: Path, op_runner: wg.Runner, max_bytes: int, timeout: float, idle: float) -> tuple[str, int]:
    """Bring the objects of the agent's ``ref`` into the operator's repo: a
    bundle written as the agent, its pack indexed with ``--strict`` (every
    object checked) into a quarantine (``objects/tmp_objdir-hive-pull-*``, the
    repo's own objects as its alternate), checked for connectivity there, and
    only then moved into ``objects/pack``. A refused pack leaves nothing behind
    (a quarantine a crash left is a ``tmp_*`` that ``git prune`` removes). The
    commit carried, and the bundle's size; a refusal says its size too
    (`carried_by`: the bytes count against the agent's hour all the same)."""
    tmp = Path(tempfile.mkdtemp(prefix="hive-pull-"))
    objects = _objects_dir(op_git, op_runner)
    quarantine = _quarantine(objects, op_runner)
    try:
        bundle = tmp / "branch.bundle"
        with open(bundle, "wb") as out:
            nots = [h for h in have if h]
            size = wg.stream_to(out, str(git_dir), "bundle", "create", "--quiet", "-", ref,
                                *(["--ignore-missing", "--not", *nots] if nots else []), runner=runner,
                                extra=wg.AGENT_CONFIG, timeout=timeout, max_bytes=max_bytes, idle=idle)
        head = read_header(bundle)
        prereqs, refs = parse_bundle_header(head)
        if set(refs) != {ref}:
            raise BadRequest(f"{name}'s bundle names {sorted(refs)}, not just {ref}")
        tip = refs[ref]
        for p in prereqs:
            if _op(op_git, op_runner, "cat-file", "-t", p).stdout.strip() != b"commit":
                raise Conflict(f"{name}'s branch starts from {p[:12]}, which the operator's repository lacks")
        env = {"GIT_OBJECT_DIRECTORY": str(quarantine), "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(objects)}
        with open(bundle, "rb") as pack:  # the pack after the header, read through this open file
            pack.seek(head.index(b"\n\n") + 2)
            r = wg.run(str(op_git), "index-pack", "--stdin", "--fix-thin", "--strict", "--threads=1",
                       runner=op_runner, stdin=pack, timeout=timeout, check=False, extra=INDEX_CONFIG,
                       env={**env, "GIT_ALLOC_LIMIT": ALLOC_LIMIT}, max_as=INDEX_MAX_AS)
        if r.returncode != 0:
            raise Conflict(f"{name}'s branch was refused by the operator's repository: {r.stderr}")
        r = wg.run(str(op_git), "rev-list", "--objects", "--quiet", tip, "--not", "--all", runner=op_runner,
                   check=False, timeout=timeout, env=env)
        if r.returncode != 0:
            raise Conflict(f"{name}'s branch is incomplete: {r.stderr}")
        r = wg.run(str(op_git), "cat-file", "-t", tip, runner=op_runner, check=False, timeout=timeout, env=env)
        if r.stdout.strip() != b"commit":
            raise Conflict(f"{name}'s {ref[len('refs/heads/'):]} does not point at a commit")
        _migrate(quarantine / "pack", objects / "pack")
        return tip, size
    except Exception as exc:
        exc.carried = max(carried_by(exc), _size(tmp / "branch.bundle"))  # type: ignore[attr-defined]
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(quarantine, ignore_errors=True)


def _size(f: Path) -> int:
    try:
        return os.stat(f).st_size
    except OSError:
        return 0


def _objects_dir(op_git: Path, op_runner: wg.Runner) -> Path:
    """The operator's object store (its common dir's, for a linked worktree)."""
    out = _op(op_git, op_runner, "rev-parse", "--git-common-dir", check=True).stdout.decode().strip()
    common = Path(out) if out.startswith("/") else op_git / out
    return common.resolve() / "objects"


def _quarantine(objects: Path, op_runner: wg.Runner) -> Path:
    """A fresh objects dir inside the operator's store (same filesystem: its packs are
    renamed in), the repo owner's."""
    q = Path(tempfile.mkdtemp(prefix="tmp_objdir-hive-pull-", dir=objects))
    (q / "pack").mkdir()
    if op_runner.uid is not None and os.geteuid() == 0:
        for d in (q, q / "pack"):
            os.chown(d, op_runner.uid, op_runner.gid if op_runner.gid is not None else op_runner.uid)
    return q


def _migrate(src: Path, dst: Path) -> None:
    """Move a checked quarantine's packs into the store: every other file first and the
    ``.idx`` last (git uses a pack once its index is there)."""
    names = sorted(os.listdir(src), key=lambda n: (n.endswith(".idx"), n))
    for n in names:
        if n.startswith("tmp_") or not n.startswith("pack-"):
            continue
        if os.path.lexists(dst / n):
            continue  # the same pack (its name is its checksum) is there already
        os.rename(src / n, dst / n)
