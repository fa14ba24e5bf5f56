"""Each agent's own unprivileged uid on the host, and the ownership of its dirs.

When the daemon runs as root, every agent gets a uid of its own (sticky, in
the daemon-owned ``agents/<name>/uid``), and its harness is started as that
uid. The files in its state dir and workspace are then the agent's, not
root's: nothing the daemon reads there is trusted, and the agent can write
nothing else. The layout:

    agents/            root 0711   (no listing of the agents)
    agents/<n>/        root 0711   port, uid, harness.log, sandbox/ (daemon-owned)
    agents/<n>/state/  agent 0700  its HOME
    agents/<n>/work/   agent 0700  its workspace
    agents/<n>/run/    root 0755   the daemon's sockets, each agent-owned 0600
    applied/<n>/       root 0755   its applied config, files 0644 (bound read-only)
"""

from __future__ import annotations

import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

import hyperhive.logs as logs
from hyperhive.names import AgentName
from hyperhive.paths import StatePaths
from hyperhive.sandbox.safefs import read_nofollow
from hyperhive.sandbox.view import etc_texts

__all__ = ["UID_FILE", "Account", "allocate_uid", "own_sockets", "prepare_dirs", "unreachable"]

_log = logs.get("hyperhive.accounts")

UID_FILE = "uid"
UID_RANGE = 65536  # agents per daemon
_lock = threading.Lock()  # allocation runs on many ContainerActor threads


@dataclass(frozen=True)
class Account:
    uid: int
    gid: int
    switch: bool  # the daemon is root: start the harness as this uid


def _read_uid(paths: StatePaths, name: str) -> int | None:
    raw = read_nofollow(paths.agents, name, UID_FILE, limit=32)
    try:
        return int(raw.decode()) if raw else None
    except ValueError:
        return None


def allocate_uid(paths: StatePaths, name: AgentName, base: int) -> int:
    """The agent's sticky uid: the one it had, else the lowest free one from ``base``."""
    with _lock:
        mine = _read_uid(paths, name)
        if mine is not None and base <= mine < base + UID_RANGE:
            return mine
        taken = set()
        for entry in paths.agents.iterdir() if paths.agents.is_dir() else []:
            if entry.name != name:
                uid = _read_uid(paths, entry.name)
                if uid is not None:
                    taken.add(uid)
        uid = next((u for u in range(base, base + UID_RANGE) if u not in taken), None)
        if uid is None:
            raise RuntimeError(f"no free agent uid in {base}..{base + UID_RANGE - 1}")
        f = paths.agent(name) / UID_FILE
        tmp = f.with_name(UID_FILE + ".tmp")
        tmp.unlink(missing_ok=True)
        tmp.write_text(f"{uid}\n")
        tmp.replace(f)
        _log.info("accounts.uid", agent=name, uid=uid)
        return uid


def account_for(paths: StatePaths, name: AgentName, base: int, switch: bool = True) -> Account:
    """The agent's own uid when the daemon is root and ``switch`` (its dirs are
    reachable by other uids), else the daemon's."""
    if switch and os.geteuid() == 0:
        uid = allocate_uid(paths, name, base)
        return Account(uid, uid, True)
    return Account(os.geteuid(), os.getegid(), False)


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    """Give ``top`` and everything under it to uid:gid, never following a link."""
    os.chown(top, uid, gid, follow_symlinks=False)
    for root, dirs, files in os.walk(top, followlinks=False):
        for n in (*dirs, *files):
            try:
                os.chown(os.path.join(root, n), uid, gid, follow_symlinks=False)
            except FileNotFoundError:
                continue


def _own_dir(path: Path, uid: int, gid: int, mode: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise RuntimeError(f"{path} is not a directory")
    if (st.st_uid, st.st_gid) != (uid, gid):
        _chown_tree(path, uid, gid)  # once: a dir made before agents had their own uid
    os.chmod(path, mode, follow_symlinks=False)


def _daemon_dir(path: Path, mode: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)


def prepare_dirs(paths: StatePaths, name: AgentName, account: Account) -> Path:
    """Lay out the agent's dirs with their owners and modes; write its /etc
    files. Returns the dir of those files."""
    _daemon_dir(paths.agents, 0o711)
    _daemon_dir(paths.agent(name), 0o711)
    _daemon_dir(paths.run(name), 0o755)
    _daemon_dir(paths.applied_root, 0o711)
    applied = paths.applied(name)  # bound read-only: the agent reads its applied config
    _daemon_dir(applied, 0o755)
    for f in applied.iterdir():
        if not f.is_symlink() and f.is_file():
            os.chmod(f, 0o644)
    _own_dir(paths.state(name), account.uid, account.gid, 0o700)
    _own_dir(paths.workspace(name), account.uid, account.gid, 0o700)
    etc = paths.agent(name) / "sandbox"
    _daemon_dir(etc, 0o755)
    for fname, text in etc_texts(name, str(paths.state(name))).items():
        f = etc / fname
        if not f.is_file() or f.read_text() != text:
            tmp = etc / (fname + ".tmp")
            tmp.unlink(missing_ok=True)
            tmp.write_text(text)
            os.chmod(tmp, 0o644)
            tmp.replace(f)
    return etc


def own_sockets(paths: StatePaths, name: AgentName, account: Account) -> None:
    """The daemon's sockets in the agent's run dir: connectable by the agent alone."""
    for entry in paths.run(name).iterdir():
        st = os.lstat(entry)
        if stat.S_ISSOCK(st.st_mode):
            if account.switch:
                os.chown(entry, account.uid, account.gid, follow_symlinks=False)
            os.chmod(entry, 0o600)


def unreachable(path: Path) -> Path | None:
    """The first directory on the way to ``path`` that another uid cannot pass
    (no o+x), or None. An agent's harness starts as its own uid and must reach
    its dirs, the interpreter and the venv."""
    p = path.resolve()
    for d in [*reversed(p.parents), p]:
        try:
            mode = os.stat(d).st_mode
        except OSError:
            return d
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            return d
    return None
