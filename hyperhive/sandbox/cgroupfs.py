"""The cgroup filesystem, as files: reading and writing control files,
``/proc/<pid>/cgroup`` parsing, and the limit writes (`cgroups` builds on it).

Every reader tolerates a cgroup removed underneath (None, zeros or empty
lists, never an exception): usage is polled while agents come and go.
Writers are one write(2) each, because cgroup files act per write and report
errors as the kernel's errno. Callers go through this module's attributes
(``cgroupfs.write(...)``), so a test can put a fake kernel rule in one place.
"""

from __future__ import annotations

import errno
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hyperhive.paths import Limits

__all__ = [
    "CONTROLLERS",
    "V2",
    "Entry",
    "Kind",
    "check_component",
    "has_controllers",
    "join_rel",
    "own_dir",
    "parse_keyed",
    "parse_self",
    "read",
    "read_int",
    "read_pids",
    "rmdir_retry",
    "write",
    "write_v1_limits",
    "write_v2_limits",
]

# One path component: no "/", no "." or "..", nothing that could name a control file ("memory.max").
_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
Kind = Literal["v1", "v2"]
CONTROLLERS = ("memory", "pids")
V2 = ""  # the key of the single v2 hierarchy in the per-hierarchy dicts


def check_component(name: str) -> str:
    """Refuse anything that is not one safe directory name (callers validate too; this is the last line)."""
    if not isinstance(name, str) or _COMPONENT.fullmatch(name) is None:
        raise ValueError(f"not a safe cgroup name: {name!r}")
    return name


# ---------------------------------------------------------------- file helpers


def read(path: Path) -> str | None:
    """The file's text, or None when it (or its cgroup) is gone: ENOENT, ENODEV on a removed cgroup."""
    try:
        return path.read_text()
    except OSError:
        return None


def read_int(path: Path) -> int | None:
    text = read(path)
    if text is None:
        return None
    try:
        return int(text.split()[0])
    except (IndexError, ValueError):
        return None


def parse_keyed(text: str | None) -> dict[str, int]:
    """``key value`` lines (memory.oom_control, memory.events, pids.events) as a dict."""
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return out


def read_pids(path: Path) -> list[int]:
    text = read(path)
    return [int(p) for p in (text or "").split() if p.isdigit()]


def write(path: Path, value: str) -> None:
    """One write(2) of ``value`` (cgroup files act per write; errors come back as the kernel's errno).

    O_CREAT only matters on a fake tree: on cgroupfs every file exists or the open fails.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def join_rel(rel: str, *parts: str) -> str:
    """A cgroup path as /proc/<pid>/cgroup shows it ("/" + components)."""
    return "/".join([rel.rstrip("/"), *parts]) if parts else rel


def rmdir_retry(path: Path, timeout: float = 1.0) -> str | None:
    """rmdir, retried briefly on EBUSY (killed tasks still exiting); None when gone, else why not."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            path.rmdir()
            return None
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() >= deadline:
                return e.strerror or str(e)
        time.sleep(0.01)


# ---------------------------------------------------------------- /proc/<pid>/cgroup


@dataclass(frozen=True)
class Entry:
    """One line of /proc/<pid>/cgroup."""

    hierarchy: str  # "0" for v2
    controllers: tuple[str, ...]
    path: str


def parse_self(text: str) -> list[Entry]:
    entries = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            ctrl = tuple(c for c in parts[1].split(",") if c)
            entries.append(Entry(parts[0], ctrl, parts[2]))
    return entries


def own_dir(mount: Path, rel: str) -> Path:
    return mount / rel.lstrip("/") if rel.strip("/") else mount


# ---------------------------------------------------------------- limits


def has_controllers(path: Path) -> bool:
    enabled = (read(path / "cgroup.subtree_control") or "").replace("+", " ").split()
    return all(c in enabled for c in CONTROLLERS)


def write_v1_limits(memory: Path, pids: Path, limits: Limits) -> None:
    """memory.limit_in_bytes (+ memsw, so swap does not hide the limit), peak reset, pids.max.

    The kernel keeps memsw >= limit at every step (EINVAL otherwise): raising writes memsw
    first, lowering writes the limit first. Should the current value be misread, the other
    order is tried once.
    """
    new = limits.memory_mb * 1024 * 1024
    limit = memory / "memory.limit_in_bytes"
    memsw = memory / "memory.memsw.limit_in_bytes"
    if memsw.exists():
        current = read_int(limit) or 0
        order = [memsw, limit] if new >= current else [limit, memsw]
        try:
            for path in order:
                write(path, str(new))
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            for path in reversed(order):
                write(path, str(new))
    else:
        write(limit, str(new))
    for peak in ("memory.max_usage_in_bytes", "memory.memsw.max_usage_in_bytes"):
        if (memory / peak).exists():
            write(memory / peak, "0")  # peak per start, not per cgroup lifetime
    write(pids / "pids.max", str(limits.pids))


def write_v2_limits(path: Path, limits: Limits) -> None:
    """memory.max, no swap, one OOM kills the whole group, pids.max."""
    write(path / "memory.max", str(limits.memory_mb * 1024 * 1024))
    if (path / "memory.swap.max").exists():
        write(path / "memory.swap.max", "0")
    write(path / "memory.oom.group", "1")
    write(path / "pids.max", str(limits.pids))
