"""How much disk each agent's whole dir (``agents/<n>/``: its home, its
workspace, its config, its log) takes (issue 16): shown on ``hive ls`` (DISK),
in the ``ls`` and ``/api/state`` rows (``disk``) and on ``/metrics``
(``hyperhive_agent_disk_bytes{agent}``).

The walk (`measure`) is the agent's to shape, so it trusts nothing there:
- every directory is opened by fd, relative to its parent's fd, with
  ``O_NOFOLLOW | O_DIRECTORY | O_NONBLOCK``, and checked (``fstat``) to be the
  one the scan saw: a link, or anything swapped in while it walks, is never
  followed; nothing but directories is ever opened (a FIFO, a socket or a
  device counts as its inode only);
- bytes are ``st_blocks * 512`` (a sparse terabyte takes what it really takes),
  each inode counted once (hard links; a directory reached twice is walked once);
- another filesystem mounted inside (``st_dev`` differs) and any mount point
  under the dir (``/proc/self/mountinfo``, so a bind mount of the same one too)
  are not entered;
- bounded: at most ``max_entries`` entries, ``max_depth`` levels and ``budget``
  seconds per agent; past a bound, or past a dir it cannot read, the figure is
  what was seen, a lower bound marked ``complete=False`` (``≥1.2G``).

`DiskMeter` keeps each agent's figure and renews it on a worker thread of its
own, at most every ``interval`` seconds (``--disk-interval-seconds``): `peek`
answers from the cache at once (the IOLoop may call it) and asks for a round
when a figure is stale. `configure` sets the daemon's meter, `observe_disks`
reads it.
"""

from __future__ import annotations

import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hyperhive.logs as logs
from hyperhive.names import validate_name
from hyperhive.paths import StatePaths
from hyperhive.sandbox.safefs import open_dir_nofollow

__all__ = ["BUDGET_SECONDS", "DEPTH_LIMIT", "ENTRY_LIMIT", "INTERVAL_SECONDS", "DiskMeter", "DiskUse", "configure",
           "measure", "meter_for", "mount_points", "observe_disks"]

_log = logs.get("hyperhive.disk_use")

ENTRY_LIMIT = 200_000  # entries one agent's walk looks at, at most
DEPTH_LIMIT = 64  # directory levels it descends (one open fd each)
BUDGET_SECONDS = 2.0  # seconds one agent's walk may take
INTERVAL_SECONDS = 60.0  # --disk-interval-seconds' default
_CLOCK_EVERY = 256  # entries between two looks at the clock
_MOUNTINFO_LIMIT = 8 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_ESCAPE = re.compile(rb"\\([0-7]{3})")


@dataclass(frozen=True)
class DiskUse:
    """One agent's dir as last measured: ``bytes`` it takes, ``files`` (inodes:
    files, dirs, links …), ``complete`` False when the walk stopped short (a lower
    bound), ``at`` when (epoch seconds)."""

    bytes: int
    files: int
    complete: bool
    at: float

    def to_wire(self) -> dict[str, Any]:
        return {"bytes": self.bytes, "files": self.files, "complete": self.complete, "at": self.at}


@dataclass
class _Walk:
    dev: int
    skip: frozenset[str]  # mount points below the dir, relative ("work/mnt")
    max_entries: int
    max_depth: int
    deadline: float
    clock: Callable[[], float]
    seen: set[tuple[int, int]] = field(default_factory=set)
    bytes: int = 0
    files: int = 0
    entries: int = 0
    complete: bool = True
    stopped: bool = False  # a bound was reached: walk no further

    def count(self, st: os.stat_result) -> bool:
        """Count an inode once; False when it was counted already."""
        if stat.S_ISDIR(st.st_mode) or st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            if key in self.seen:
                return False
            self.seen.add(key)
        self.bytes += st.st_blocks * 512
        self.files += 1
        return True

    def bound(self) -> bool:
        if self.entries >= self.max_entries or (self.entries % _CLOCK_EVERY == 0 and self.clock() > self.deadline):
            self.stopped, self.complete = True, False
        return self.stopped


def _walk(w: _Walk, fd: int, rel: str, depth: int) -> None:
    """Count what the dir open on ``fd`` holds (the dir itself is counted by its caller)."""
    dirs: list[tuple[str, os.stat_result]] = []
    try:
        with os.scandir(fd) as it:
            for entry in it:
                if w.bound():
                    break
                w.entries += 1
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:  # gone while we looked
                    continue
                if st.st_dev != w.dev or (w.skip and f"{rel}{entry.name}" in w.skip):
                    continue  # another filesystem, or a mount: not the agent's to count
                if not w.count(st) or not stat.S_ISDIR(st.st_mode):
                    continue
                if depth >= w.max_depth:
                    w.complete = False
                else:
                    dirs.append((entry.name, st))
    except OSError:  # unreadable
        w.complete = False
    for name, st in dirs:
        if w.stopped:
            return
        try:
            sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
        except OSError:  # removed, unreadable, or swapped for a link (ELOOP/ENOTDIR): not followed
            w.complete = False
            continue
        try:
            now = os.fstat(sub)
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                w.complete = False  # another dir moved in meanwhile: not this walk's
                continue
            _walk(w, sub, f"{rel}{name}/", depth + 1)
        finally:
            os.close(sub)


def mount_points(under: Path, mountinfo: bytes | None = None) -> frozenset[str]:
    """The mount points strictly below ``under`` (resolved), relative to it, from
    ``/proc/self/mountinfo`` (or the ``mountinfo`` text given)."""
    if mountinfo is None:
        try:
            with open("/proc/self/mountinfo", "rb") as f:
                mountinfo = f.read(_MOUNTINFO_LIMIT)
        except OSError:
            return frozenset()
    prefix = os.fsencode(os.path.realpath(under)).rstrip(b"/") + b"/"
    out = set()
    for line in mountinfo.splitlines():
        fields = line.split(b" ")
        if len(fields) < 5:
            continue
        point = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 8) & 0xFF]), fields[4])
        if point.startswith(prefix) and len(point) > len(prefix):
            out.add(os.fsdecode(point[len(prefix):].rstrip(b"/")))
    return frozenset(out)


def measure(base: Path, name: str, max_entries: int = ENTRY_LIMIT, budget: float = BUDGET_SECONDS,
            max_depth: int = DEPTH_LIMIT, mounts: frozenset[str] | None = None,
            clock: Callable[[], float] = time.monotonic) -> DiskUse | None:
    """The disk use of ``base/name`` (``base`` trusted: the daemon's agents dir;
    ``name`` a single component, never followed if a link). None when it does
    not exist. ``mounts``: the mount points below it (`mount_points`; read now
    when not given). See the module's design."""
    deadline = clock() + budget
    try:
        with open_dir_nofollow(base) as bfd:
            fd = os.open(validate_name(name), _DIR_FLAGS, dir_fd=bfd)
    except FileNotFoundError:
        return None
    except OSError:  # a link, not a dir, unreadable: nothing followed
        return DiskUse(0, 0, False, time.time())
    try:
        st = os.fstat(fd)
        skip = mount_points(base / name) if mounts is None else mounts
        w = _Walk(st.st_dev, skip, max_entries, max_depth, deadline, clock)
        w.count(st)
        _walk(w, fd, "", 0)
    finally:
        os.close(fd)
    return DiskUse(w.bytes, w.files, w.complete, time.time())


class DiskMeter:
    """Each agent's `DiskUse`, renewed on one worker thread (started on first
    need), stalest first, each at most every ``interval`` seconds."""

    def __init__(self, paths: StatePaths, interval: float = INTERVAL_SECONDS, max_entries: int = ENTRY_LIMIT,
                 budget: float = BUDGET_SECONDS, *, clock: Callable[[], float] = time.monotonic) -> None:
        """``clock``: what a figure's age is measured by (seconds, monotonic)."""
        self.paths = paths
        self.interval = interval
        self.max_entries = max_entries
        self.budget = budget
        self._clock = clock
        self._cond = threading.Condition()
        self._cache: dict[str, tuple[DiskUse | None, float]] = {}  # name → (figure, monotonic time measured)
        self._wanted: set[str] = set()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.rounds = 0  # rounds finished (tests wait on it)

    def _stale(self, name: str, now: float) -> bool:
        hit = self._cache.get(name)
        return hit is None or now - hit[1] >= self.interval

    def peek(self, names: Iterable[str]) -> dict[str, DiskUse | None]:
        """Each name's figure as cached (None: not measured yet); the stale ones are
        asked for. Never waits on a walk: fine on the IOLoop."""
        now = self._clock()
        out: dict[str, DiskUse | None] = {}
        with self._cond:
            for n in names:
                hit = self._cache.get(n)
                out[n] = None if hit is None else hit[0]
                if hit is None or now - hit[1] >= self.interval:
                    self._wanted.add(n)
            if self._wanted and not self._closed:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="disk-meter", daemon=True)
                    self._thread.start()
                self._cond.notify_all()
        return out

    def wire(self, names: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        return {n: None if d is None else d.to_wire() for n, d in self.peek(names).items()}

    def asked(self) -> frozenset[str]:
        """The names asked for that no round has taken up yet."""
        with self._cond:
            return frozenset(self._wanted)

    def forget(self, name: str) -> None:
        with self._cond:
            self._cache.pop(name, None)

    def close(self) -> None:
        """Stop the worker after the walk it is in (if any)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._wanted and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                batch = sorted(self._wanted, key=lambda n: self._cache.get(n, (None, 0.0))[1])
                self._wanted.clear()
            mounts = mount_points(self.paths.agents)
            for name in batch:
                with self._cond:
                    if self._closed:
                        return
                    if not self._stale(name, self._clock()):
                        continue  # measured since it was asked for
                self._measure(name, mounts)
            with self._cond:
                self.rounds += 1
                self._cond.notify_all()

    def _measure(self, name: str, mounts: frozenset[str]) -> None:
        prefix = f"{name}/"
        mine = frozenset(m[len(prefix):] for m in mounts if m.startswith(prefix))
        started = time.monotonic()
        try:
            got = measure(self.paths.agents, name, self.max_entries, self.budget, mounts=mine)
        except Exception as exc:  # noqa: BLE001 - one agent's dir never stops the others'
            _log.warning("disk.measure_failed", agent=name, error=f"{type(exc).__name__}: {exc}")
            got = None
        took = time.monotonic() - started
        if got is not None:
            _log.debug("disk.measured", agent=name, bytes=got.bytes, files=got.files, complete=got.complete,
                       seconds=round(took, 3))
        with self._cond:
            self._cache[name] = (got, self._clock())

    def wait_round(self, after: int, timeout: float) -> bool:
        """Wait (``timeout`` seconds at most) until more than ``after`` rounds finished."""
        end = time.monotonic() + timeout
        with self._cond:
            while self.rounds <= after:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True


_METERS: dict[str, DiskMeter] = {}
_METERS_LOCK = threading.Lock()


def configure(paths: StatePaths, interval: float) -> DiskMeter:
    """The daemon's meter of ``paths``' agents, renewing every ``interval`` seconds."""
    with _METERS_LOCK:
        old = _METERS.pop(str(paths.agents), None)
        meter = _METERS[str(paths.agents)] = DiskMeter(paths, interval)
    if old is not None:
        old.close()
    return meter


def meter_for(paths: StatePaths) -> DiskMeter:
    """The meter of ``paths``' agents (made with the default interval if none was configured)."""
    with _METERS_LOCK:
        meter = _METERS.get(str(paths.agents))
        if meter is None:
            meter = _METERS[str(paths.agents)] = DiskMeter(paths)
        return meter


def observe_disks(paths: StatePaths, names: Iterable[str]) -> dict[str, dict[str, Any] | None]:
    """Each agent's ``disk`` (`DiskUse.to_wire`, None: not measured yet), from the
    cache at once; stale ones are renewed in the background."""
    return meter_for(paths).wire(names)
