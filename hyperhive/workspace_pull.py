"""Fetching an agent's branch back into the operator's repository (issue 14):
after every turn and on ``hive pull NAME``.

The daemon never runs git in the agent's clone with its own privileges: the
clone, its config included, is the agent's. So:

1. ``work/`` and ``work/.git`` must be plain directories owned by the agent
   (a ``gitdir:`` file or a link could point the call at another repo), with
   no ``objects/info/alternates`` (borrowed objects);
2. as the agent's uid, with `config_git`'s settings on top of the repo's
   (no hooks, fsmonitor, transport; `workspace_git.AGENT_CONFIG`), git names
   the branch's commit and writes a bundle of ``refs/heads/hive/<name>`` to a
   pipe, less what the operator's repo already has; the daemon copies it into
   a temp file of its own, at most ``max_bytes`` and ``timeout`` seconds;
3. the bundle's header must name that one ref and nothing else, and start
   only from commits the operator's repo has;
4. in the operator's repo, as its owner: the bundle's pack goes to
   ``git index-pack --stdin --fix-thin --strict`` (every object checked: a
   fetch from a bundle does not fsck before git 2.45), the new tip is checked
   for connectivity (``rev-list --objects <tip> --not --all``), and then
   ``update-ref`` writes the one ref ``refs/heads/hive/<name>``, only if it
   still holds what was read before: no FETCH_HEAD, no tags, no other ref,
   never the checkout, the index or another branch (a ``hive/<name>`` the
   operator has checked out in any worktree is refused). A branch the agent
   rewrote still moves (it is the agent's branch); the log says so.

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
    operator_git_dir,
    operator_runner,
    parse_bundle_header,
    read_header,
    read_workspace,
)

__all__ = ["MAX_BUNDLE_BYTES", "PULL_TIMEOUT", "PullResult", "agent_runner", "pull"]

_log = logs.get("hyperhive.workspace")

MAX_BUNDLE_BYTES = 1 << 30  # one pull's bundle at most
PULL_TIMEOUT = 300.0  # seconds for one pull's bundle (and as long again for its fetch)


@dataclass(frozen=True)
class PullResult:
    name: str
    branch: str
    commit: str | None  # hive/<name> in the operator's repo now; None when the agent has no commit yet
    ahead: int | None  # its commits not in the operator's HEAD
    rewritten: bool = False  # the agent's branch no longer contains what the operator had of it

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
         timeout: float = PULL_TIMEOUT) -> PullResult:
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
    commit = _oid(wg.run(str(git_dir), "rev-parse", "--verify", "-q", f"{ref}^{{commit}}", runner=runner,
                         extra=wg.AGENT_CONFIG, check=False, timeout=timeout))
    old = _oid(_op(op_git, op_runner, "rev-parse", "--verify", "-q", f"{ref}^{{commit}}"))
    if commit is None or commit == old:
        return PullResult(name, record.branch, old, _ahead(op_git, op_runner, ref) if old else None)
    _refuse_checked_out(op_git, op_runner, ref)
    if _op(op_git, op_runner, "cat-file", "-t", commit).stdout.strip() != b"commit":
        commit = _carry(name, ref, (old, record.base), runner, git_dir, op_git, op_runner, max_bytes, timeout)
    # The one ref written, only if it still is what was read above.
    _op(op_git, op_runner, "update-ref", "-m", f"hive pull {name}", ref, commit, old or "0" * len(commit),
        check=True)
    rewritten = bool(old and _op(op_git, op_runner, "merge-base", "--is-ancestor", old, commit).returncode)
    if rewritten:
        _log.warning("workspace.pull_rewrote", agent=name, branch=record.branch, was=old, now=commit)
    ahead = _ahead(op_git, op_runner, ref)
    _log.info("workspace.pulled", agent=name, branch=record.branch, commit=commit, ahead=ahead, repo=str(top))
    return PullResult(name, record.branch, commit, ahead, rewritten)


def _carry(name: AgentName, ref: str, have: tuple[str | None, str | None], runner: wg.Runner, git_dir: Path,
           op_git: Path, op_runner: wg.Runner, max_bytes: int, timeout: float) -> str:
    """Bring the objects of the agent's ``ref`` into the operator's repo: a
    bundle written as the agent, its pack indexed there with ``--strict``
    (every object checked) and checked for connectivity. The commit carried."""
    tmp = Path(tempfile.mkdtemp(prefix="hive-pull-"))
    try:
        bundle = tmp / "branch.bundle"
        with open(bundle, "wb") as out:
            nots = [h for h in have if h]
            wg.stream_to(out, str(git_dir), "bundle", "create", "--quiet", "-", ref,
                         *(["--ignore-missing", "--not", *nots] if nots else []),
                         runner=runner, extra=wg.AGENT_CONFIG, timeout=timeout, max_bytes=max_bytes)
        head = read_header(bundle)
        prereqs, refs = parse_bundle_header(head)
        if set(refs) != {ref}:
            raise BadRequest(f"{name}'s bundle names {sorted(refs)}, not just {ref}")
        tip = refs[ref]
        for p in prereqs:
            if _op(op_git, op_runner, "cat-file", "-t", p).stdout.strip() != b"commit":
                raise Conflict(f"{name}'s branch starts from {p[:12]}, which the operator's repository lacks")
        with open(bundle, "rb") as pack:  # the pack after the header, read through this open file
            pack.seek(head.index(b"\n\n") + 2)
            r = wg.run(str(op_git), "index-pack", "--stdin", "--fix-thin", "--strict", runner=op_runner,
                       stdin=pack, timeout=timeout, check=False)
        if r.returncode != 0:
            raise Conflict(f"{name}'s branch was refused by the operator's repository: {r.stderr}")
        r = _op(op_git, op_runner, "rev-list", "--objects", "--quiet", tip, "--not", "--all")
        if r.returncode != 0:
            raise Conflict(f"{name}'s branch is incomplete: {r.stderr}")
        return tip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
