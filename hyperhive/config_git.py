"""The hardened way to run git on a config repository, and to read its
objects back (`config_repo` builds commits and the applied dir on it).

A config repo is data the daemon does not trust (see `config_repo`): every
git call is built by ``git_command`` (pure), with a fixed argv, no shell, the
repo named explicitly, ``-c`` settings that turn off everything git could run
(they beat the repo's own config) and an environment made from nothing. Objects
are read raw with ``cat-file --batch`` and each one's id is checked against
its bytes here, so a planted replacement, a corrupted loose object or a lying
index cannot make git hand back other bytes under an object's name.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path

from hyperhive.errors import BadRequest, Internal

__all__ = [
    "DEFAULT_PATH",
    "FULL_ID",
    "GIT_CONFIG",
    "checked_repo",
    "git_command",
    "git_env",
    "read_objects",
    "run_git",
    "tree_entries",
    "tree_of",
]

DEFAULT_PATH = "/run/current-system/sw/bin:/usr/local/bin:/usr/bin:/bin"
FULL_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")

# Given with -c on every call: command-line settings win over the repo's own
# .git/config (and its includes), so none of these can be switched back on.
GIT_CONFIG: tuple[tuple[str, str], ...] = (
    ("core.hooksPath", "/dev/null"),  # no hook of any kind (pre-commit, reference-transaction, ...)
    ("core.fsmonitor", "false"),  # an fsmonitor is a command git runs
    ("core.untrackedCache", "false"),
    ("protocol.allow", "never"),  # no transport at all: nothing to fetch, no ssh, no helpers
    ("protocol.file.allow", "never"),
    ("core.sshCommand", "false"),
    ("credential.helper", ""),
    ("core.attributesFile", "/dev/null"),
    ("core.useReplaceRefs", "false"),  # as GIT_NO_REPLACE_OBJECTS
    ("core.commitGraph", "false"),  # a planted commit-graph could name another tree for a commit
    ("core.pager", "cat"),
    ("gc.auto", "0"),  # no auto gc (and so no pre-auto-gc hook)
    ("maintenance.auto", "false"),
    ("commit.gpgSign", "false"),  # gpg.program would be a command
)
_ENV: tuple[tuple[str, str], ...] = (
    ("GIT_NO_REPLACE_OBJECTS", "1"),
    ("GIT_CONFIG_GLOBAL", "/dev/null"),
    ("GIT_CONFIG_SYSTEM", "/dev/null"),
    ("GIT_CONFIG_NOSYSTEM", "1"),
    ("GIT_TERMINAL_PROMPT", "0"),
    ("GIT_ATTR_NOSYSTEM", "1"),
    ("HOME", "/nonexistent"),  # no ~/.gitconfig, no XDG config or attributes
    ("LC_ALL", "C"),
)



def git_env(path: str | None = None, identity: tuple[str, str] | None = None) -> dict[str, str]:
    """The whole environment of a git call (pure): ``path`` is the daemon's
    PATH (only to find git), ``identity`` (name, email) the author and
    committer of a commit. Nothing else of the daemon's environment passes."""
    env = {"PATH": path or DEFAULT_PATH, **dict(_ENV)}
    if identity is not None:
        name, email = identity
        env |= {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
                "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}
    return env


def git_command(repo: Path, args: Sequence[str], *, path: str | None = None,
                identity: tuple[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """argv and environment of one git call in the repo at ``repo`` (pure).

    The git dir and work tree are named, never discovered (no walk up to a
    parent repo, no ``core.worktree`` of the repo's), and every ``GIT_CONFIG``
    setting comes before the subcommand."""
    argv = ["git", "--no-pager", f"--git-dir={repo / '.git'}", f"--work-tree={repo}"]
    for key, value in GIT_CONFIG:
        argv += ["-c", f"{key}={value}"]
    return [*argv, *args], git_env(path, identity)


def run_git(repo: Path, *args: str, input: bytes | None = None, check: bool = True,
            identity: tuple[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run one git call built by ``git_command`` (cwd /, 60 s at most); Internal on failure when ``check``."""
    argv, env = git_command(repo.absolute(), args, path=os.environ.get("PATH"), identity=identity)
    r = subprocess.run(argv, input=input, capture_output=True, env=env, cwd="/", timeout=60,
                       stdin=None if input is not None else subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise Internal(f"git {' '.join(args[:2])} failed in {repo}: {r.stderr.decode(errors='replace').strip()}")
    return r


def checked_repo(config_dir: Path) -> Path:
    """``config_dir`` if it is a repo whose ``.git`` is a real directory (not a
    link or a gitfile sending git elsewhere)."""
    try:
        ok = stat.S_ISDIR(os.lstat(config_dir).st_mode) and stat.S_ISDIR(os.lstat(config_dir / ".git").st_mode)
    except OSError:
        ok = False
    if not ok:
        raise BadRequest(f"{config_dir} is not a git repository")
    return config_dir


# --- reading objects, each checked against its id -----------------------------------

def _object_id(kind: str, data: bytes, hexlen: int) -> str:
    h = hashlib.sha1 if hexlen == 40 else hashlib.sha256  # git's object ids (sha1 or sha256 repos)
    return h(f"{kind} {len(data)}\0".encode() + data).hexdigest()


def read_objects(repo: Path, oids: Sequence[str], kind: str) -> dict[str, bytes]:
    """The raw bytes of each of ``oids``, which must all be objects of ``kind``
    whose bytes hash to their ids."""
    if not oids:
        return {}
    out = run_git(repo, "cat-file", "--batch", input="".join(f"{o}\n" for o in oids).encode()).stdout
    got: dict[str, bytes] = {}
    pos = 0
    for oid in oids:
        end = out.find(b"\n", pos)
        header = out[pos:end].decode(errors="replace").split() if end >= 0 else []
        if len(header) != 3 or header[0] != oid or not header[2].isdigit():
            raise BadRequest(f"object {oid[:12]} is missing from the config repository")
        size = int(header[2])
        data = out[end + 1:end + 1 + size]
        pos = end + 2 + size
        if header[1] != kind or len(data) != size or _object_id(kind, data, len(oid)) != oid:
            raise BadRequest(f"object {oid[:12]} in the config repository is not the {kind} it claims to be")
        got[oid] = data
    return got


def tree_entries(data: bytes, hexlen: int) -> list[tuple[str, str, str]]:
    """(mode, name, oid) of a raw tree object."""
    width = hexlen // 2
    entries: list[tuple[str, str, str]] = []
    pos = 0
    try:
        while pos < len(data):
            sp = data.index(b" ", pos)
            nul = data.index(b"\0", sp)
            mode = data[pos:sp].decode("ascii")
            name = data[sp + 1:nul].decode("utf-8")
            if nul + 1 + width > len(data):
                raise ValueError("truncated entry")
            entries.append((mode, name, data[nul + 1:nul + 1 + width].hex()))
            pos = nul + 1 + width
    except ValueError:  # UnicodeDecodeError included
        raise BadRequest("a tree in the config repository is malformed (or names a file in other than UTF-8)") from None
    return entries


def tree_of(commit_data: bytes) -> str:
    first = commit_data.split(b"\n", 1)[0].decode(errors="replace")
    if not first.startswith("tree ") or not FULL_ID.fullmatch(first[5:]):
        raise BadRequest("a commit in the config repository has no tree")
    return first[5:]
