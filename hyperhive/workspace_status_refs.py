"""Reading an agent's clone's refs without running git in it, and without
following anything it planted.

The clone (``agents/<n>/work``) is the agent's: its ``.git/config`` could name
an fsmonitor, filters, aliases, an ``include.path`` or a ``gitdir:`` file, and
any name in it may be a link to a host file. So the daemon never runs git
there; it reads the few files that say where the branches point (``HEAD``,
loose refs under ``refs/heads``, ``refs/stash``, ``packed-refs``) itself:
- every step is an ``O_NOFOLLOW`` walk from ``work/`` (``safefs``); ``.git``
  must be a real directory (a ``gitdir:`` file or a link is refused);
- every file read must be a regular file owned by the clone's owner (a hard
  link to someone else's file is refused), and small (a ref is at most 4 KiB,
  ``packed-refs`` at most 1 MiB; bigger is refused, never read in part);
- values are parsed strictly: a full hex object id, or ``ref: refs/…`` with a
  plain ref name; at most 5 symbolic hops and 200 branches;
- the walk of ``refs/heads`` looks at ``MAX_ENTRIES`` directory entries at
  most (dirs and ``*.lock`` files included): a million planted entries would
  otherwise cost every status, listing and purge check seconds (review 14c).
Anything else makes the whole read fail (``RefsUnreadable``): the caller treats
the clone's state as unknown, never as clean.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hyperhive.sandbox.safefs import open_dir_nofollow

__all__ = ["MAX_REFS", "CloneRefs", "RefsUnreadable", "read_branch_tip", "read_clone_refs", "valid_ref_name"]

MAX_REFS = 200
MAX_ENTRIES = MAX_REFS * 5  # directory entries one walk of the clone's refs reads at most
REF_LIMIT = 4096
PACKED_LIMIT = 1 << 20
CONFIG_LIMIT = 1 << 20
_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_COMPONENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+@-]{0,99}")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_dirs(dirfd: int, parts: list[str]) -> int:
    """A readable fd of ``dirfd/parts…``, each step a real directory (no link followed);
    the caller closes it. OSError (FileNotFoundError, ELOOP, ENOTDIR) when a step is not."""
    fd = os.open(".", _DIR_FLAGS, dir_fd=dirfd)
    try:
        for p in parts:
            if not p or p in (".", "..") or "/" in p or "\x00" in p:
                raise NotADirectoryError(f"not a single path component: {p!r}")
            nfd = os.open(p, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


class RefsUnreadable(Exception):
    """The clone's refs cannot be read safely (the message says why)."""


@dataclass(frozen=True)
class CloneRefs:
    """Where the clone's branches point, as its own files say."""

    branch: str | None  # HEAD's branch ("hive/a"), None when detached
    head: str | None  # HEAD's commit id, None on an unborn branch
    tips: dict[str, str]  # ref name (refs/heads/…, refs/stash) → object id


def valid_ref_name(name: str) -> bool:
    """A plain ref name under ``refs/``: safe components only (no '..', no
    leading '.', no '.lock', nothing git would read as revision syntax)."""
    parts = name.split("/")
    return (len(name) <= 255 and len(parts) >= 2 and parts[0] == "refs"
            and all(_COMPONENT.fullmatch(p) and not p.endswith((".lock", ".")) and ".." not in p
                    for p in parts[1:]))


def _read_owned(dirfd: int, name: str, owner: int, limit: int) -> bytes | None:
    """A regular file ``name`` in ``dirfd``, owned by ``owner``, at most ``limit``
    bytes; None when missing; RefsUnreadable when anything else."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=dirfd)
    except FileNotFoundError:
        return None
    except OSError as exc:  # a link (ELOOP), a dir, …
        raise RefsUnreadable(f"{name} cannot be opened safely ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise RefsUnreadable(f"{name} is not a regular file")
        if st.st_uid != owner:
            raise RefsUnreadable(f"{name} is not owned by the clone's owner")
        if st.st_size > limit:
            raise RefsUnreadable(f"{name} is {st.st_size} bytes (at most {limit})")
        data = b""
        while len(data) <= limit and (chunk := os.read(fd, limit + 1 - len(data))):
            data += chunk
        if len(data) > limit:
            raise RefsUnreadable(f"{name} grew past {limit} bytes")
        return data
    finally:
        os.close(fd)


def _parse_value(data: bytes, where: str) -> tuple[str, str]:
    """("id", oid) or ("ref", name) of a HEAD or loose ref file."""
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise RefsUnreadable(f"{where} is not ASCII") from None
    if _ID.fullmatch(text):
        return "id", text
    if text.startswith("ref: ") and valid_ref_name(text[5:].strip()):
        return "ref", text[5:].strip()
    raise RefsUnreadable(f"{where} holds neither an object id nor a ref")


class _Reader:
    def __init__(self, gitfd: int, owner: int) -> None:
        self.gitfd = gitfd
        self.owner = owner
        self._packed: dict[str, str] | None = None
        self.entries = 0  # directory entries the walk has read so far

    def packed(self) -> dict[str, str]:
        if self._packed is None:
            data = _read_owned(self.gitfd, "packed-refs", self.owner, PACKED_LIMIT) or b""
            out: dict[str, str] = {}
            for raw in data.decode("ascii", errors="replace").splitlines():
                if not raw or raw.startswith(("#", "^")):
                    continue
                oid, _, name = raw.partition(" ")
                if not _ID.fullmatch(oid) or not valid_ref_name(name):
                    raise RefsUnreadable("packed-refs has a malformed line")
                out[name] = oid
                if len(out) > MAX_REFS * 5:
                    raise RefsUnreadable("packed-refs names too many refs")
            self._packed = out
        return self._packed

    def loose(self, name: str) -> bytes | None:
        *dirs, last = name.split("/")
        try:
            dfd = _open_dirs(self.gitfd, dirs)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise RefsUnreadable(f"{name}: {exc.strerror}") from None
        try:
            return _read_owned(dfd, last, self.owner, REF_LIMIT)
        finally:
            os.close(dfd)

    def resolve(self, name: str) -> str | None:
        """The object id ``name`` ends at (loose first, then packed); None when unborn."""
        for _hop in range(5):
            data = self.loose(name)
            if data is None:
                return self.packed().get(name)
            kind, value = _parse_value(data, name)
            if kind == "id":
                return value
            name = value
        raise RefsUnreadable("too many symbolic ref hops")

    def walk(self, prefix: str, out: dict[str, str], depth: int = 0) -> None:
        """Every loose ref under ``prefix`` (a dir of refs), no links followed."""
        if depth > 8:
            raise RefsUnreadable(f"{prefix} nests too deep")
        try:
            dfd = _open_dirs(self.gitfd, prefix.split("/"))
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise RefsUnreadable(f"{prefix}: {exc.strerror}") from None
        try:
            for entry, is_dir in self._entries(dfd, prefix):
                ref = f"{prefix}/{entry}"
                if is_dir:
                    self.walk(ref, out, depth + 1)
                elif entry.endswith(".lock"):
                    continue  # a ref being written: its old value is the loose file's or packed
                elif not valid_ref_name(ref):
                    raise RefsUnreadable(f"{ref!r} is not a plain ref name")
                else:
                    oid = self.resolve(ref)
                    if oid is not None:
                        out[ref] = oid
                if len(out) > MAX_REFS:
                    raise RefsUnreadable(f"more than {MAX_REFS} branches")
        finally:
            os.close(dfd)

    def _entries(self, dfd: int, prefix: str) -> list[tuple[str, bool]]:
        """The (name, is a real directory) of ``dfd``'s entries, sorted; RefsUnreadable once the
        walk has read more than MAX_ENTRIES (read lazily: a huge dir costs no more than that)."""
        found: list[tuple[str, bool]] = []
        with os.scandir(dfd) as it:
            for e in it:
                self.entries += 1
                if self.entries > MAX_ENTRIES:
                    raise RefsUnreadable(f"more than {MAX_ENTRIES} entries under {prefix}")
                found.append((e.name, e.is_dir(follow_symlinks=False)))
        return sorted(found)


_INCLUDE = re.compile(rb"^\s*\[\s*include(if)?\b", re.IGNORECASE | re.MULTILINE)


@contextlib.contextmanager
def _git_dir(work: Path) -> Iterator[tuple[int, int]]:
    """The clone's ``.git`` opened link-proof, with the clone's owner; any OSError
    (here or in the body) becomes RefsUnreadable saying what was wrong."""
    try:
        owner = os.lstat(work).st_uid
        with open_dir_nofollow(work, [".git"]) as gitfd:
            yield gitfd, owner
    except FileNotFoundError:
        raise RefsUnreadable("the clone has no .git directory") from None
    except NotADirectoryError:
        raise RefsUnreadable("the clone's .git is not a directory (a gitdir file?)") from None
    except OSError as exc:
        raise RefsUnreadable(f"the clone's .git cannot be opened safely ({exc.strerror})") from None


def read_clone_refs(work: Path) -> CloneRefs:
    """HEAD, its branch and every branch tip (and the stash) of the clone at ``work``."""
    with _git_dir(work) as (gitfd, owner):
        reader = _Reader(gitfd, owner)
        head_raw = _read_owned(gitfd, "HEAD", owner, REF_LIMIT)
        if head_raw is None:
            raise RefsUnreadable("the clone has no HEAD")
        kind, value = _parse_value(head_raw, "HEAD")
        branch = None
        head = value if kind == "id" else reader.resolve(value)
        if kind == "ref":
            if not value.startswith("refs/heads/"):
                raise RefsUnreadable("HEAD points outside refs/heads")
            branch = value[len("refs/heads/"):]
        tips: dict[str, str] = {}
        reader.walk("refs/heads", tips)
        for name, oid in reader.packed().items():
            if name.startswith("refs/heads/") and name not in tips and reader.loose(name) is None:
                tips[name] = oid
        stash = reader.resolve("refs/stash")
        if stash is not None:
            tips["refs/stash"] = stash
        if head is not None and branch is None:
            tips["HEAD"] = head
        if len(tips) > MAX_REFS:
            raise RefsUnreadable(f"more than {MAX_REFS} branches")
        return CloneRefs(branch, head, tips)


def _check_regular(dirfd: int, name: str, owner: int, limit: int) -> None:
    """``name`` in ``dirfd`` is absent or a regular file of ``owner`` of at most ``limit``
    bytes (never read: a FIFO there is opened without blocking, and refused)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=dirfd)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise RefsUnreadable(f"{name} cannot be opened safely ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != owner or st.st_size > limit:
        raise RefsUnreadable(f"{name} is not a regular file of the clone's owner (of at most {limit} bytes)")


def read_branch_tip(work: Path, ref: str) -> str | None:
    """Where the clone's ``ref`` (``refs/heads/…``) points, read link-proof, None when
    it is unborn; RefsUnreadable unless ``.git`` is a real directory and what git would
    open first there (``config``, ``HEAD``, the ref, ``packed-refs``) is absent or a
    regular file of the clone's owner (a FIFO would hold git's ``open`` for ever)."""
    if not valid_ref_name(ref) or not ref.startswith("refs/heads/"):
        raise RefsUnreadable(f"{ref!r} is not a branch name")
    with _git_dir(work) as (gitfd, owner):
        config = _read_owned(gitfd, "config", owner, CONFIG_LIMIT)
        if config is not None and _INCLUDE.search(config):
            # git opens an included file wherever it points (a FIFO holds it for ever)
            raise RefsUnreadable("the clone's config includes other files; refused")
        for name in ("shallow", "info/grafts"):  # also opened by the pull's git
            _check_regular(gitfd, name, owner, CONFIG_LIMIT)
        head_raw = _read_owned(gitfd, "HEAD", owner, REF_LIMIT)
        if head_raw is None:
            raise RefsUnreadable("the clone has no HEAD")
        _parse_value(head_raw, "HEAD")
        reader = _Reader(gitfd, owner)
        reader.packed()
        return reader.resolve(ref)
