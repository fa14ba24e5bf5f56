"""What an agent's clone holds that the operator's repo does not (issue 14):
its branch, its commits ahead of the repo's HEAD, whether it has uncommitted
changes, and the commits a purge would lose.

The design never runs git with the clone's config outside a sandbox:
- **where the branches point** is read by the daemon itself, from the clone's
  ``HEAD``/loose refs/``packed-refs`` files, link-proof and owner-checked
  (``workspace_status_refs``); no git runs in the clone for that;
- **whether those commits are kept** is asked of the *operator's* repo (named
  by the daemon-owned ``agents/<n>/workspace.json``, trusted, through the
  workspace's hardened runner, as the repo's owner): a tip it has and reaches from one of its
  refs is kept (the pull fetched it as ``hive/<name>``); subjects come from
  there; the ids handed to git are full hex ids checked here, never revision
  syntax;
- **uncommitted changes, and commits the operator's repo lacks**, need git in
  the clone (filters, the index, the clone's objects): that git runs in a
  sandbox as the agent's uid with the clone read-only and nothing else of
  the host in view (``workspace_status_probe``). Its answer is the agent's
  to shape; it only ever adds reasons to keep work.
Anything that cannot be determined leaves ``reason`` set: a purge treats an
unknown as work to keep (``--force`` overrides).

Costs: the ref reads and one or two git calls in the operator's repo are a
few ms; the sandboxed ``git status`` is tens of ms, so ``cached_status``
keeps each agent's answer a few seconds (``ls`` and the dashboard read it
from there; a purge always computes afresh). Call everything here off the
IOLoop and off actor threads (the coordinator's purge is the exception: it
must check what it is about to remove, on its own thread, bounded by the
timeouts of both git runs).
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hyperhive.logs as logs
from hyperhive import workspace_git as wg
from hyperhive.config_git import FULL_ID
from hyperhive.errors import HiveError
from hyperhive.names import AgentName
from hyperhive.paths import StatePaths
from hyperhive.sandbox.safefs import lstat_in, read_nofollow
from hyperhive.workspace import operator_git_dir, operator_runner
from hyperhive.workspace_status_probe import ProbeFailed, status_count, unpulled_log
from hyperhive.workspace_status_refs import CloneRefs, RefsUnreadable, read_clone_refs, valid_ref_name

__all__ = ["WORKSPACE_FILE", "Commit", "WorkStatus", "Workspace", "cached_status", "forget", "lost_work",
           "observe_workspaces", "read_workspace", "work_status", "workspace_wire"]

_log = logs.get("hyperhive.workspace_status")

WORKSPACE_FILE = "workspace.json"
LIST_LIMIT = 20  # commits named in a status; the count says how many in all
CACHE_SECONDS = 5.0
MIN_PROBE = 0.5  # seconds a clone's probes get in a listing whose budget is spent (a changed, young entry)
SUBJECT_LIMIT = 200
GIT_TIMEOUT = 20.0  # each git call in the operator's repo


@dataclass(frozen=True)
class Workspace:
    """``agents/<n>/workspace.json``: the daemon's record of the clone."""

    repo: str | None  # the operator's repository (absolute), None without one
    branch: str  # "hive/<name>"
    base: str | None  # the commit the clone started from


@dataclass(frozen=True)
class Commit:
    id: str
    subject: str
    pulled: bool  # its object is in the operator's repo (though no ref there reaches it)

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "subject": self.subject, "pulled": self.pulled}


@dataclass(frozen=True)
class WorkStatus:
    """One clone's state; ``reason`` says what could not be determined (None: all of it)."""

    present: bool  # the agent has a workspace to speak of
    branch: str | None = None
    head: str | None = None
    ahead: int | None = None  # commits ahead of the operator's HEAD (None: unknown, or no repo)
    dirty: bool | None = None
    dirty_files: int | None = None
    unmerged: tuple[Commit, ...] = ()  # the first LIST_LIMIT commits not kept by the operator's repo
    unmerged_count: int | None = 0  # all of them (None: unknown)
    unpulled: int = 0  # of those, how many the operator's repo does not even have
    repo: str | None = None
    reason: str | None = None
    at: float = field(default=0.0, compare=False)

    @property
    def unknown(self) -> bool:
        return self.reason is not None

    def to_wire(self) -> dict[str, Any]:
        return {"present": self.present, "branch": self.branch, "head": self.head, "ahead": self.ahead,
                "dirty": self.dirty, "dirty_files": self.dirty_files,
                "unmerged": [c.to_wire() for c in self.unmerged], "unmerged_count": self.unmerged_count,
                "unpulled": self.unpulled, "repo": self.repo, "reason": self.reason, "lost": lost_work(self)}


def read_workspace(paths: StatePaths, name: AgentName) -> Workspace | None:
    """The daemon-owned record (read without following links); None when absent.
    ValueError when it is there but not what the daemon writes."""
    raw = read_nofollow(paths.agents, name, WORKSPACE_FILE)
    if raw is None:
        if lstat_in(paths.agents, name, WORKSPACE_FILE) is not None:
            raise ValueError(f"{WORKSPACE_FILE} is not a regular file")
        return None
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError(f"{WORKSPACE_FILE} is not an object")
    repo, branch, base = data.get("repo"), data.get("branch", f"hive/{name}"), data.get("base")
    if repo is not None and (not isinstance(repo, str) or not repo.startswith("/") or "\0" in repo):
        raise ValueError(f"{WORKSPACE_FILE}: repo must be an absolute path or null")
    if not isinstance(branch, str) or not valid_ref_name(f"refs/heads/{branch}"):
        raise ValueError(f"{WORKSPACE_FILE}: bad branch")
    if base is not None and (not isinstance(base, str) or not FULL_ID.fullmatch(base)):
        raise ValueError(f"{WORKSPACE_FILE}: base must be a full commit id or null")
    return Workspace(repo, branch, base)


def _subject(raw: str) -> str:
    text = "".join(ch if ch.isprintable() else " " for ch in raw).strip()
    return text[:SUBJECT_LIMIT]


def _commits(lines: list[str], pulled: bool) -> list[Commit]:
    out = []
    for line in lines:
        oid, _, subject = line.partition("\0")
        if FULL_ID.fullmatch(oid):
            out.append(Commit(oid, _subject(subject), pulled))
    return out


class _Repo:
    """The operator's repository (trusted): the workspace's hardened runner, as the repo's owner."""

    def __init__(self, path: Path) -> None:
        self.git_dir = str(operator_git_dir(path))
        self.runner = operator_runner(Path(self.git_dir))

    def run(self, *args: str, input: bytes | None = None, check: bool = True) -> wg.GitResult:
        return wg.run(self.git_dir, *args, runner=self.runner, input=input, check=check, timeout=GIT_TIMEOUT)

    def git(self, *args: str, input: bytes | None = None) -> str:
        return self.run(*args, input=input).stdout.decode("utf-8", errors="replace")

    def has_commits(self, ids: list[str]) -> set[str]:
        if not ids:
            return set()
        out = self.git("cat-file", "--batch-check=%(objectname) %(objecttype)",
                       input="".join(f"{i}\n" for i in ids).encode())
        return {p[0] for line in out.splitlines() if len(p := line.split()) == 2 and p[1] == "commit"}

    def ref(self, name: str) -> str | None:
        r = self.run("rev-parse", "--verify", "--quiet", "--end-of-options", f"{name}^{{commit}}", check=False)
        oid = r.stdout.decode(errors="replace").strip()
        return oid if r.returncode == 0 and FULL_ID.fullmatch(oid) else None

    def tips(self, limit: int = 1000) -> list[str]:
        out = self.git("for-each-ref", f"--count={limit}", "--format=%(objectname)")
        return sorted({t for t in out.split() if FULL_ID.fullmatch(t)})

    def unkept(self, present: list[str]) -> list[str]:
        """``id NUL subject`` of commits reachable from ``present`` and from no ref here."""
        if not present:
            return []
        return self.git("rev-list", "--no-commit-header", "--format=%H%x00%s", f"--max-count={LIST_LIMIT * 50}",
                        *present, "--not", "--all").splitlines()

    def count_not_in(self, tip: str, head: str | None) -> int:
        args = [tip] if head is None else [tip, "--not", head]
        return int(self.git("rev-list", "--count", *args).strip() or 0)


def _empty_dir(work: Path) -> bool:
    try:
        return not any(True for _ in work.iterdir())
    except OSError:
        return False


def work_status(paths: StatePaths, name: AgentName, now: float | None = None,
                deadline: float | None = None) -> WorkStatus:
    """The clone's state, computed now (see the module's design); its probes end by
    ``deadline`` (`time.monotonic`) at the latest (past it: unknown, with the reason)."""
    at = time.time() if now is None else now
    try:
        ws = read_workspace(paths, name)
    except (ValueError, OSError) as exc:
        return WorkStatus(True, reason=f"the workspace record cannot be read ({exc})", at=at)
    work = paths.workspace(name)
    st = lstat_in(paths.agents, name, "work")
    if st is None or not stat.S_ISDIR(st.st_mode):
        return WorkStatus(ws is not None, repo=None if ws is None else ws.repo, at=at,
                          reason="the workspace is missing" if ws is not None else None)
    if ws is None and lstat_in(work, ".git") is None:
        return WorkStatus(False, at=at)  # an agent from before workspaces: nothing tracked
    repo = None if ws is None else ws.repo
    try:
        refs = read_clone_refs(work)
    except RefsUnreadable as exc:
        if ws is None and _empty_dir(work):
            return WorkStatus(False, at=at)
        return WorkStatus(True, repo=repo, reason=str(exc), at=at)
    try:
        return _status(work, ws, refs, at, deadline)
    except (ProbeFailed, HiveError, OSError, ValueError) as exc:
        _log.info("workspace.status_unknown", agent=name, reason=str(exc))
        return WorkStatus(True, branch=refs.branch, head=refs.head, repo=repo, reason=str(exc), at=at)


def _status(work: Path, ws: Workspace | None, refs: CloneRefs, at: float, deadline: float | None) -> WorkStatus:
    tips = sorted(set(refs.tips.values()))
    repo = None if ws is None or ws.repo is None else _Repo(Path(ws.repo))
    kept_not: list[Commit] = []
    present: set[str] = set()
    ahead: int | None = None
    known: list[str] = []
    if repo is not None:
        assert ws is not None
        present = repo.has_commits(tips)
        kept_not = _commits(repo.unkept(sorted(present)), pulled=True)
        known = sorted({*repo.tips(), *present, *([ws.base] if ws.base else [])})
        counted = refs.head if refs.head in present else repo.ref(f"refs/heads/{ws.branch}")
        ahead = 0 if counted is None else repo.count_not_in(counted, repo.ref("HEAD"))
    absent = [t for t in tips if t not in present]
    unpulled = 0
    not_pulled: list[Commit] = []
    if absent:
        unpulled, lines = unpulled_log(work, absent, known, LIST_LIMIT, deadline=deadline)
        unpulled = max(unpulled, 1)  # a tip the repo lacks is one commit at least, whatever the clone says
        not_pulled = _commits(lines, pulled=False)
        if ahead is not None and refs.head in absent:
            ahead += unpulled
    unmerged = [*not_pulled, *kept_not]
    count = len(kept_not) + unpulled
    dirty_files = status_count(work, deadline)
    return WorkStatus(True, branch=refs.branch, head=refs.head, ahead=ahead, dirty=dirty_files > 0,
                      dirty_files=dirty_files, unmerged=tuple(unmerged[:LIST_LIMIT]), unmerged_count=count,
                      unpulled=unpulled, repo=None if ws is None else ws.repo, at=at)


def lost_work(st: WorkStatus) -> str | None:
    """What removing the clone would lose, in words; None when nothing."""
    if not st.present:
        return None
    parts: list[str] = []
    if st.reason is not None:
        parts.append(f"whatever its workspace holds (it cannot be checked: {st.reason})")
    if st.unmerged_count:
        named = "; ".join(f"{c.id[:12]} {c.subject}".rstrip() for c in st.unmerged[:5])
        more = st.unmerged_count - min(5, len(st.unmerged))
        where = "not in the operator's repo" if st.repo else "in a workspace with no repository"
        pulled = f", {st.unpulled} not pulled" if st.unpulled and st.repo else ""
        tail = f" (and {more} more)" if more > 0 else ""
        parts.append(f"{st.unmerged_count} commit(s) {where}{pulled}: {named}{tail}")
    if st.dirty:
        parts.append(f"uncommitted changes in {st.dirty_files} file(s)")
    return "; ".join(parts) or None


_CACHE: dict[tuple[str, str], tuple[WorkStatus, tuple[Any, ...]]] = {}
_LOCK = threading.Lock()
# What a commit, a checkout, a stash or a pull touches (lstat'ed, never followed): a change
# to any of them makes a cached status stale at once, whatever its age.
_CLONE_FILES = (("workspace.json",), ("work",), ("work", ".git"), ("work", ".git", "index"), ("work", ".git", "HEAD"),
                ("work", ".git", "packed-refs"), ("work", ".git", "logs", "HEAD"), ("work", ".git", "refs", "stash"))


def _fingerprint(paths: StatePaths, name: AgentName) -> tuple[Any, ...]:
    out: list[Any] = []
    for parts in _CLONE_FILES:
        st = lstat_in(paths.agents, name, *parts)
        out.append(None if st is None else (st.st_ino, st.st_size, st.st_mtime_ns))
    try:
        ws = read_workspace(paths, name)
    except (ValueError, OSError):
        ws = None
    if ws is not None and ws.repo is not None:  # the pull's ref in the operator's repo
        for f in (Path(ws.repo, ".git", "refs", "heads", *ws.branch.split("/")), Path(ws.repo, ".git", "packed-refs")):
            try:
                st = os.lstat(f)
                out.append((st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                out.append(None)
    return tuple(out)


def cached_status(paths: StatePaths, name: AgentName, max_age: float = CACHE_SECONDS,
                  deadline: float | None = None) -> WorkStatus:
    """``work_status``, reused for ``max_age`` seconds while none of the clone's
    telltale files changed (ls, the dashboard, the kept-state rows); computed by
    ``deadline`` (`time.monotonic`) at the latest."""
    key = (str(paths.root), name)
    now = time.time()
    mark = _fingerprint(paths, name)
    with _LOCK:
        hit = _CACHE.get(key)
    if hit is not None and now - hit[0].at < max_age and hit[1] == mark:
        return hit[0]
    st = work_status(paths, name, now, deadline)
    with _LOCK:
        _CACHE[key] = (st, mark)
    return st


def workspace_wire(paths: StatePaths, name: AgentName, max_age: float = CACHE_SECONDS,
                   deadline: float | None = None) -> dict[str, Any] | None:
    """What ``ls`` and the dashboard show of an agent's clone (cached), None without one;
    computed by ``deadline`` at the latest. Never raises: a failure is a status with its reason."""
    try:
        st = cached_status(paths, name, max_age, deadline)
    except Exception as exc:  # noqa: BLE001 - one agent's clone never breaks a listing
        _log.warning("workspace.status_failed", agent=name, error=str(exc))
        st = WorkStatus(True, reason=f"the workspace cannot be checked ({type(exc).__name__})")
    return st.to_wire() if st.present else None


def observe_workspaces(paths: StatePaths, names: list[AgentName], budget: float = 2.0,
                       max_age: float = CACHE_SECONDS) -> dict[str, dict[str, Any] | None]:
    """``workspace_wire`` of each of ``names``, computing afresh (stalest first)
    only for ``budget`` seconds; the rest come from the cache as they are, and
    one never computed is left out (a later round gets to it). So one round
    over a thousand clones costs ``budget``, not a thousand sandboxed gits; and
    a clone's probes end with the budget (one slow clone is unknown, not a stall)."""
    key = str(paths.root)
    with _LOCK:
        ages = {n: _CACHE[(key, n)][0].at if (key, n) in _CACHE else 0.0 for n in names}
    out: dict[str, dict[str, Any] | None] = {}
    deadline = time.monotonic() + budget
    now = time.time()
    for n in sorted(names, key=lambda n: ages[n]):
        if now - ages[n] < max_age or time.monotonic() < deadline:
            out[n] = workspace_wire(paths, n, max_age, max(deadline, time.monotonic() + MIN_PROBE))
        else:
            with _LOCK:
                hit = _CACHE.get((key, n))
            if hit is not None:
                out[n] = hit[0].to_wire() if hit[0].present else None
    return out


def forget(paths: StatePaths, name: AgentName) -> None:
    """Drop an agent's cached status (it was purged)."""
    with _LOCK:
        _CACHE.pop((str(paths.root), name), None)
