"""Kept state (F18): agent dirs with no live container, and purging them.

Every path is checked twice before anything is removed: the name must be a
valid agent name (so `..`, `.`, `a/../..`, `m1nd/..`, absolute paths and NUL
never reach the filesystem), and each target must be a real directory (not a
symlink) whose resolved path sits directly under the state dir's own
`agents/` or `applied/`. The original had a hole here: the name `..` would
have wiped the whole state dir.

`agents/<name>` is the daemon's; `agents/<name>/state/**` is the agent's, and
anything there may be a link planted to a host file. Nothing under it is
followed: the credentials check walks with ``O_NOFOLLOW`` (``sandbox.safefs``),
the size walk goes by directory fds (``os.fwalk``, which refuses a directory
swapped for a link while it walks), and the removal is ``shutil.rmtree``'s
fd-based one (refused where the platform has none).

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
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hyperhive.logs as logs
from hyperhive.errors import BadName, Conflict, Unavailable, UnknownAgent
from hyperhive.names import AgentName, is_valid_name, validate_name
from hyperhive.paths import StatePaths
from hyperhive.sandbox.safefs import is_regular_nofollow
from hyperhive.workspace_status import cached_status, forget, lost_work, work_status

__all__ = ["CREDENTIALS", "Tombstone", "check_work", "credentials_stored", "dir_usage", "list_tombstones", "purge"]

_log = logs.get("hyperhive.tombstones")

CREDENTIALS = (".claude", ".credentials.json")  # the claude driver's login, under the agent's state/
_TOMB_STATUS_SECONDS = 30.0  # nothing runs in a tombstone: its clone changes only by a pull or a purge


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


def dir_usage(path: Path) -> tuple[int, float]:
    """Bytes in regular files under ``path`` and the newest mtime of anything
    there (the dir included). Symlinks are counted as themselves, never followed,
    not even one swapped in for a directory while the walk runs."""
    size = 0
    newest = path.lstat().st_mtime
    for _top, dirs, files, dirfd in os.fwalk(path, follow_symlinks=False):
        for entry in (*dirs, *files):
            try:
                st = os.stat(entry, dir_fd=dirfd, follow_symlinks=False)
            except FileNotFoundError:  # removed while we walked
                continue
            newest = max(newest, st.st_mtime)
            if stat.S_ISREG(st.st_mode):
                size += st.st_size
    return size, newest


def list_tombstones(paths: StatePaths, live_names: Collection[str], now: float,
                    workspaces: bool = False) -> list[Tombstone]:
    """Every agent dir without a live container, oldest-named first; with each
    one's workspace status when ``workspaces`` (git runs: never on an actor thread)."""
    root = paths.agents
    if not root.is_dir():
        return []
    out: list[Tombstone] = []
    for entry in sorted(root.iterdir()):
        name = entry.name
        if name in live_names or not is_valid_name(name) or entry.is_symlink() or not entry.is_dir():
            continue
        agent = AgentName(name)
        size, newest = dir_usage(entry)
        ws = cached_status(paths, agent, max_age=_TOMB_STATUS_SECONDS) if workspaces else None
        out.append(Tombstone(agent, size, newest, max(0.0, now - newest), credentials_stored(root, agent),
                             ws.to_wire() if ws is not None and ws.present else None))
    return out


def _contained(paths: StatePaths, parent: Path, name: AgentName) -> Path:
    """``parent/name`` checked to be a plain entry of the state dir's ``parent``."""
    root = paths.root.resolve()
    parent_real = parent.resolve()
    if parent.is_symlink() or parent_real != root / parent.name:
        raise BadName(f"{parent} is not inside the state dir {root}")
    target = parent / name
    if target.is_symlink():
        raise BadName(f"{target} is a symlink; refusing to follow it")
    real = target.resolve()
    if real.parent != parent_real or real == root or not real.is_relative_to(root):
        raise BadName(f"agent name {name!r} escapes {parent_real}")
    return real


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
        shutil.rmtree(t)
    forget(paths, agent)
    _log.info("tombstone.purged", agent=agent, removed=[str(t) for t in present], forced=force)
    return present
