"""Where the agents' dirs live (``--agents-dir``, issue 16): by default
``<state>/agents``, else a dir of the operator's choosing, such as another
filesystem than hive.sqlite's, so an agent that fills its disk fills that one
and the store keeps committing.

Checked at start, before anything runs (each refusal a `BadSetting`: `serve`
prints one line and exits 1):

- the dir is absolute, has no ``..``, is not a symlink (every daemon lookup
  below it starts with ``O_NOFOLLOW`` from it: `hyperhive.sandbox.safefs`), is a
  directory owned by the daemon's uid; made 0711 when missing;
- it is neither the state dir nor inside it (but as ``<state>/agents``), and
  the state dir is not inside it (where it would pass for an agent's dir);
- ``<state>/agents-dir`` records where the agents are (``agents`` for the
  default), written at the first start: a start with another place while the
  recorded one still holds an agent's dir is refused, naming it (agents are
  never silently left behind; to move them: stop, move, remove the file);
- a dir given by ``--agents-dir`` holds ``.hive-state``, the state dir it
  belongs to: another hive's is refused, and a missing one where this hive's
  agents were is refused too (its filesystem is probably not mounted).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import hyperhive.logs as logs
from hyperhive.errors import BadSetting
from hyperhive.names import is_valid_name
from hyperhive.paths import StatePaths

__all__ = ["MARKER", "OWNER_MARKER", "prepare", "state_paths"]

_log = logs.get("hyperhive.agents_dir")

MARKER = "agents-dir"  # in the state dir: where its agents are
OWNER_MARKER = ".hive-state"  # in a --agents-dir (not an agent name): whose agents these are
DEFAULT = "agents"  # the marker's word for <state>/agents
_SCAN_CAP = 100_000  # entries looked at for an agent's dir, at most


def state_paths(state_dir: Path, agents_dir: str) -> StatePaths:
    """The daemon's paths with ``agents_dir`` ("" for the default) checked as a path:
    nothing is read or made. BadSetting when it cannot be the agents' dir."""
    if not agents_dir:
        return StatePaths(state_dir)
    given = Path(agents_dir)
    if not given.is_absolute():
        raise BadSetting(f"agents_dir must be an absolute path, got {agents_dir!r}")
    if ".." in given.parts or any(c in agents_dir for c in "\x00\n\r"):
        raise BadSetting(f"agents_dir must be a plain absolute path (no '..', NUL or line break), got {agents_dir!r}")
    state, real = state_dir.resolve(), given.resolve()
    if real == state / DEFAULT:
        return StatePaths(state_dir)  # the default, spelt out
    if real == state or state in real.parents:
        raise BadSetting(f"agents_dir {given} is inside the state dir {state}: give a dir of its own "
                         f"(or leave it empty for {state / DEFAULT})")
    if real in state.parents:
        raise BadSetting(f"agents_dir {given} holds the state dir {state}, which would pass for an agent's dir")
    return StatePaths(state_dir, agents_root=given)


def prepare(paths: StatePaths) -> None:
    """Check the agents' dir, compare it with the recorded one, make it (0711) and
    record it; under the state dir's lock. BadSetting when this start would lose
    agents or cannot use the dir; nothing is made before every check passed."""
    exists = _check_dir(paths.agents)
    custom = paths.agents_root is not None
    here = str(paths.agents) if custom else DEFAULT
    recorded = _read(paths.root / MARKER)
    if recorded is None and custom and holds_agents(paths.root / DEFAULT):
        raise _moved(paths, paths.root / DEFAULT)
    if recorded is not None and recorded != here:
        was = paths.root / recorded  # an absolute one stays as it is
        if holds_agents(was):
            raise _moved(paths, was)
        _log.info("agents_dir.changed", was=str(was), now=str(paths.agents))
    if custom:
        _check_owner(paths, expected=recorded == here)
    if not exists:
        paths.agents.mkdir(mode=0o711, parents=True)
    os.chmod(paths.agents, 0o711, follow_symlinks=False)
    if custom and _read(paths.agents / OWNER_MARKER) is None:
        _write(paths.agents, OWNER_MARKER, str(paths.root.resolve()))
    if recorded != here:
        _write(paths.root, MARKER, here)


def holds_agents(path: Path) -> bool:
    """Whether ``path`` has an agent's dir in it (a dir named like an agent; at most
    `_SCAN_CAP` entries looked at, an unreadable or missing dir holds none)."""
    try:
        with os.scandir(path) as it:
            for i, entry in enumerate(it):
                if i >= _SCAN_CAP:
                    return True  # that many entries: something is there
                if is_valid_name(entry.name) and entry.is_dir(follow_symlinks=False):
                    return True
    except OSError:
        return False
    return False


def _moved(paths: StatePaths, was: Path) -> BadSetting:
    flag = "no --agents-dir" if was == paths.root / DEFAULT else f"--agents-dir {was}"
    return BadSetting(f"the agents are in {was}, not {paths.agents}: start with {flag} (or move them there, "
                      f"then remove {paths.root / MARKER})")


def _check_dir(path: Path) -> bool:
    """Whether ``path`` exists; BadSetting unless it is then a daemon-owned directory, no symlink."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise BadSetting(f"agents_dir {path}: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise BadSetting(f"agents_dir {path} is a symlink: give the dir it points to ({os.path.realpath(path)})")
    if not stat.S_ISDIR(st.st_mode):
        raise BadSetting(f"agents_dir {path} is not a directory")
    if st.st_uid != os.geteuid():
        raise BadSetting(f"agents_dir {path} belongs to uid {st.st_uid}, not the daemon's ({os.geteuid()})")
    return True


def _check_owner(paths: StatePaths, expected: bool) -> None:
    """A given agents dir names the state dir it belongs to; ``expected``: this hive's
    agents were there at its last start, so the name must be there."""
    state = str(paths.root.resolve())
    owner = _read(paths.agents / OWNER_MARKER)
    if owner is not None and owner != state:
        raise BadSetting(f"agents_dir {paths.agents} holds the agents of the hive whose state dir is {owner} "
                         f"(its {OWNER_MARKER}), not {state}'s")
    if owner is None and expected:
        raise BadSetting(f"agents_dir {paths.agents} has no {OWNER_MARKER}, yet this hive's agents were there: "
                         f"is its filesystem mounted? (to start afresh there, remove {paths.root / MARKER})")


def _read(path: Path) -> str | None:
    """The text of the daemon's small file ``path`` (not followed if a link), None
    when missing or empty; BadSetting when it is something else than a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BadSetting(f"cannot read {path}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BadSetting(f"{path} is not a regular file")
        return os.read(fd, 8192).decode(errors="replace").strip() or None  # empty: never written whole
    finally:
        os.close(fd)


def _write(where: Path, name: str, text: str) -> None:
    """``where/name`` replaced atomically (0644, the daemon's)."""
    tmp = where / f".{name.lstrip('.')}.tmp"
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, (text + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, where / name)
