"""Kept state (F18): agent dirs with no live container, and purging them.

Every path is checked twice before anything is removed: the name must be a
valid agent name (so `..`, `.`, `a/../..`, `m1nd/..`, absolute paths and NUL
never reach the filesystem), and each target must be a real directory (not a
symlink) whose resolved path sits directly under the state dir's own
`agents/` or `applied/` (or the `--agents-dir`, checked at start to be no
link). The original had a hole here: the name `..` would have wiped the
whole state dir.

`agents/<name>` is the daemon's; `agents/<name>/state/**` is the agent's, and
anything there may be a link planted to a host file. Nothing under it is
followed: the credentials check walks with ``O_NOFOLLOW`` (``sandbox.safefs``),
the size walk goes by directory fds opened ``O_NOFOLLOW`` (a directory swapped
for a link while it walks is skipped), and the removal is ``shutil.rmtree``'s
fd-based one (refused where the platform has none).

Review 14c: the agent shapes the tree, and both used to recurse once per
level (``os.fwalk``, ``shutil.rmtree`` before Python 3.13): a directory chain
a thousand deep in its state made every tombstone listing (``hive
tombstones``, the dashboard's whole state) raise RecursionError, and its purge
impossible, ``--force`` or not. The size walk is now a loop with a budget
(`WALK_ENTRIES` entries, `WALK_DEPTH` levels: past it the size is a lower
bound, the time is bounded), and a removal ``rmtree`` cannot finish for that
reason is finished by ``rm -rf`` (coreutils walks any depth, links unfollowed).

Work-preserving (issue 14): unless forced, a purge first asks
``workspace_status`` what removing the agent's clone would lose (commits the
operator's repo does not keep, uncommitted changes) and refuses with a
Conflict that says so; a clone whose state cannot be determined counts as
work to keep. This is the one path of both ``purge`` and ``destroy --purge``.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hyperhive.logs as logs
from hyperhive.errors import BadName, Conflict, Unavailable, UnknownAgent
from hyperhive.names import AgentName, is_valid_name, validate_name
from hyperhive.paths import StatePaths
from hyperhive.sandbox.safefs import is_regular_nofollow
from hyperhive.workspace_status import forget, lost_work, observe_workspaces, work_status

__all__ = ["CREDENTIALS", "Tombstone", "check_work", "credentials_stored", "dir_usage", "list_tombstones", "purge"]

_log = logs.get("hyperhive.tombstones")

CREDENTIALS = (".claude", ".credentials.json")  # the claude driver's login, under the agent's state/
_TOMB_STATUS_SECONDS = 30.0  # nothing runs in a tombstone: its clone changes only by a pull or a purge
_TOMB_BUDGET = 2.0  # seconds of sandboxed git one listing spends on the tombstones' clones
WALK_ENTRIES = 200_000  # entries one size walk looks at, at most (then its size is a lower bound)
WALK_DEPTH = 64  # directory levels it descends
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Tombstone:
    name: AgentName
    size_bytes: int
    modified_at: float
    age_seconds: float
    credentials_kept: bool
    workspace: dict[str, Any] | None = None  # workspace_status's wire form (None: no workspace)

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name, "size_bytes": self.size_bytes, "modified_at": self.modified_at,
                "age_seconds": self.age_seconds, "credentials_kept": self.credentials_kept,
                "workspace": self.workspace}


def credentials_stored(agents: Path, name: str) -> bool:
    """Whether ``agents/<name>/state/.claude/.credentials.json`` is a regular file
    reached through real directories only: a link anywhere on the way (the
    agent's to plant) counts as no credentials and is never followed."""
    try:
        return is_regular_nofollow(agents, name, "state", *CREDENTIALS)
    except ValueError:  # not a single path component: no agent of ours
        return False


def dir_usage(path: Path, max_entries: int = WALK_ENTRIES, max_depth: int = WALK_DEPTH) -> tuple[int, float]:
    """Bytes in regular files under ``path`` and the newest mtime of anything
    there (the dir included). Symlinks are counted as themselves, never followed,
    not even one swapped in for a directory while the walk runs. No recursion:
    at most ``max_entries`` entries and ``max_depth`` levels (then the figures
    are of what was seen), and one open fd per level."""
    size = 0
    newest = path.lstat().st_mtime
    seen = 0
    pending: dict[int, int] = {}  # an open dir's fd → its subdirs not walked yet
    todo: list[tuple[int | None, str, int]] = [(None, str(path), 0)]  # (parent fd, name, depth)
    try:
        while todo and seen < max_entries:
            parent, name, depth = todo.pop()
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            except OSError:  # removed, or swapped for a link (ELOOP/ENOTDIR): not followed
                fd = -1
            if parent is not None:
                pending[parent] -= 1
                if not pending[parent]:
                    os.close(parent)
                    del pending[parent]
            if fd < 0:
                continue
            pending[fd] = 0
            with os.scandir(fd) as entries:
                for e in entries:
                    seen += 1
                    if seen > max_entries:
                        break
                    try:
                        st = e.stat(follow_symlinks=False)
                    except FileNotFoundError:  # removed while we walked
                        continue
                    newest = max(newest, st.st_mtime)
                    if stat.S_ISREG(st.st_mode):
                        size += st.st_size
                    elif stat.S_ISDIR(st.st_mode) and depth < max_depth:
                        todo.append((fd, e.name, depth + 1))
                        pending[fd] += 1
            if not pending[fd]:
                os.close(fd)
                del pending[fd]
    finally:
        for fd in pending:
            os.close(fd)
    return size, newest


def list_tombstones(paths: StatePaths, live_names: Collection[str], now: float,
                    workspaces: bool = False) -> list[Tombstone]:
    """Every agent dir without a live container, oldest-named first; with each
    one's workspace status when ``workspaces`` (git runs: never on an actor thread)."""
    root = paths.agents
    if not root.is_dir():
        return []
    found = [AgentName(e.name) for e in sorted(root.iterdir()) if e.name not in live_names
             and is_valid_name(e.name) and not e.is_symlink() and e.is_dir()]
    # Budgeted as the live agents' round is (review 14c): a clone whose probes stall does not
    # hold the listing (the dashboard's page); one not reached in time comes in a later round.
    ws = observe_workspaces(paths, found, budget=_TOMB_BUDGET, max_age=_TOMB_STATUS_SECONDS) if workspaces else {}
    out: list[Tombstone] = []
    for agent in found:
        size, newest = dir_usage(root / agent)
        out.append(Tombstone(agent, size, newest, max(0.0, now - newest), credentials_stored(root, agent),
                             ws.get(agent)))
    return out


def _contained(paths: StatePaths, parent: Path, name: AgentName) -> Path:
    """``parent/name`` checked to be a plain entry of ``parent``: the agents dir (no
    link, checked at start: it may be outside the state dir, ``--agents-dir``) or a
    dir of the state dir (``applied/``, ``agents/``) that resolves inside it."""
    root = paths.root.resolve()
    parent_real = parent.resolve()
    given = paths.agents_root is not None and parent == paths.agents
    if parent.is_symlink() or (not given and parent_real != root / parent.name):
        raise BadName(f"{parent} is not inside the state dir {root}")
    target = parent / name
    if target.is_symlink():
        raise BadName(f"{target} is a symlink; refusing to follow it")
    real = target.resolve()
    if real.parent != parent_real or real in (root, parent_real):
        raise BadName(f"agent name {name!r} escapes {parent_real}")
    return real


def _remove_tree(target: Path) -> None:
    """``shutil.rmtree`` (fd-based); a tree too deep for its recursion is finished by
    coreutils' ``rm -rf`` (any depth, no link followed, this filesystem only)."""
    try:
        shutil.rmtree(target)
    except RecursionError:
        _log.warning("tombstone.deep_tree", path=str(target))
        subprocess.run(["rm", "-rf", "--one-file-system", "--", str(target)], check=True, stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=3600)


def check_work(paths: StatePaths, agent: AgentName) -> None:
    """Conflict when removing the agent's dirs would lose work (commits the
    operator's repo does not keep, uncommitted changes, or a clone that cannot
    be checked), naming it. Git runs: see ``workspace_status`` for the cost."""
    lost = lost_work(work_status(paths, agent))
    if lost is not None:
        _log.info("tombstone.purge_refused", agent=agent, lost=lost)
        raise Conflict(f"{agent}: purge refused, it would lose {lost}; its state is kept (--force purges anyway)")


def purge(paths: StatePaths, name: object, live_names: Collection[str], force: bool = False) -> list[Path]:
    """Remove ``agents/<name>`` and ``applied/<name>`` of an agent with no live
    container; returns what was removed. Every check runs before any removal,
    the work check last (unless ``force``): Conflict naming what would be lost."""
    agent = validate_name(name)
    if agent in live_names:
        raise Conflict(f"{agent!r} has a live container; destroy it before purging its state")
    targets = [_contained(paths, paths.agents, agent), _contained(paths, paths.applied_root, agent)]
    present = [t for t in targets if t.exists()]
    if not present:
        raise UnknownAgent(f"no kept state for {agent!r}")
    for t in present:
        if not t.is_dir():
            raise BadName(f"{t} is not a directory; refusing to remove it")
    if not shutil.rmtree.avoids_symlink_attacks:  # the agent's links inside must be removed, not followed
        raise Unavailable("this platform has no symlink-safe rmtree; refusing to purge")
    if not force:
        check_work(paths, agent)
    for t in present:
        _remove_tree(t)
    forget(paths, agent)
    _log.info("tombstone.purged", agent=agent, removed=[str(t) for t in present], forced=force)
    return present
