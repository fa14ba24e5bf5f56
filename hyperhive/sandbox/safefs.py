"""Opening files where a hostile agent can write, without following its links.

The daemon often runs as root, and an agent owns its state dir: any name
there may be a symlink to a host file by the time the daemon looks. Every
lookup here walks one component at a time from a directory the daemon
trusts, with ``O_NOFOLLOW`` at each step, so a link is refused rather than
followed, and a swap between check and use cannot redirect it.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["append_nofollow", "is_regular_nofollow", "lstat_in", "open_dir_nofollow", "read_nofollow"]

_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@contextlib.contextmanager
def open_dir_nofollow(base: Path, parts: Sequence[str] = ()) -> Iterator[int]:
    """An O_PATH fd of ``base/parts…``; ``base`` must itself not be a link, nor
    any of ``parts`` (each a single name: no '/', '.', '..', NUL)."""
    fd = os.open(base, _DIR_FLAGS)
    try:
        for p in parts:
            _check_part(p)
            nfd = os.open(p, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nfd
        yield fd
    finally:
        os.close(fd)


def _check_part(p: str) -> None:
    if not p or p in (".", "..") or "/" in p or "\x00" in p:
        raise ValueError(f"not a single path component: {p!r}")


def lstat_in(base: Path, *parts: str) -> os.stat_result | None:
    """lstat of ``base/parts…`` reached without following links; None if any step
    is missing or is a link (where a directory was needed)."""
    *dirs, last = parts
    _check_part(last)
    try:
        with open_dir_nofollow(base, dirs) as fd:
            return os.stat(last, dir_fd=fd, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError, OSError):
        return None


def is_regular_nofollow(base: Path, *parts: str) -> bool:
    st = lstat_in(base, *parts)
    return st is not None and stat.S_ISREG(st.st_mode)


def read_nofollow(base: Path, *parts: str, limit: int = 1 << 16) -> bytes | None:
    """At most ``limit`` bytes of a regular file reached without links; None
    when it is missing, a link, or not a regular file."""
    *dirs, last = parts
    _check_part(last)
    try:
        with open_dir_nofollow(base, dirs) as dfd:
            fd = os.open(last, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dfd)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit)
    finally:
        os.close(fd)


def append_nofollow(path: Path, mode: int = 0o640) -> int:
    """An fd appending to ``path``, created if missing; refused (OSError) if it is
    a link or not a regular file. The caller owns the fd."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a regular file")
    return fd
