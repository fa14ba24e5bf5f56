"""One agent's cgroup(s) (`Cgroups.agent` and `Cgroups.prepare` hand them out):
where its launcher goes, what it uses, how to end it, its OOM watch.

Nothing here creates or removes a cgroup: a handle may name one that is gone,
and then reads zeros, None or empty lists (usage is polled while agents come
and go).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import hyperhive.logs as logs
from hyperhive.sandbox import cgroupfs
from hyperhive.sandbox.cgroupfs import V2, Kind
from hyperhive.sandbox.oom_watch import OomWatch, start_watch

__all__ = ["AgentCgroup"]

log = logs.get("hyperhive.cgroups")


class AgentCgroup:
    """One agent's cgroup(s): where its launcher goes, what it uses, how to end it."""

    procs_files: tuple[Path, ...]

    def __init__(self, kind: Kind, agent: str, dirs: Mapping[str, Path], rels: Mapping[str, str]) -> None:
        self.kind = kind
        self.agent = agent
        self.dirs = dict(dirs)  # hierarchy key → dir (v1: "memory", "pids"; v2: "")
        self._rels = dict(rels)
        self.procs_files = tuple(path / "cgroup.procs" for path in self.dirs.values())

    def __repr__(self) -> str:
        return f"AgentCgroup({self.kind}, {self.agent!r})"

    @property
    def _memory(self) -> Path:
        return self.dirs["memory" if self.kind == "v1" else V2]

    @property
    def _pids_dir(self) -> Path:
        return self.dirs["pids" if self.kind == "v1" else V2]

    def oom_kills(self) -> int:
        """How many OOM kills this cgroup has seen (since it was created; compare before/after a start)."""
        if self.kind == "v1":
            return cgroupfs.parse_keyed(cgroupfs.read(self._memory / "memory.oom_control")).get("oom_kill", 0)
        events = cgroupfs.parse_keyed(cgroupfs.read(self._memory / "memory.events"))
        return events.get("oom_kill", 0) + events.get("oom_group_kill", 0)

    def usage(self) -> dict[str, int | None]:
        """Memory now and at peak, and the task count; None for what cannot be read."""
        if self.kind == "v1":
            current = cgroupfs.read_int(self._memory / "memory.usage_in_bytes")
            peak = cgroupfs.read_int(self._memory / "memory.max_usage_in_bytes")
        else:
            current = cgroupfs.read_int(self._memory / "memory.current")
            peak = cgroupfs.read_int(self._memory / "memory.peak")
        return {"memory_bytes": current, "memory_peak_bytes": peak,
                "pids": cgroupfs.read_int(self._pids_dir / "pids.current")}

    def pids(self) -> list[int]:
        """The processes (thread-group ids) in the agent's cgroup(s), in any hierarchy."""
        return sorted({pid for procs in self.procs_files for pid in cgroupfs.read_pids(procs)})

    def kill_all(self, timeout: float = 5.0) -> bool:
        """SIGKILL everything in the cgroup until it is empty; True when it is.

        Processes may fork while this runs, so it loops until a listing comes back empty or
        the deadline passes. v2 kernels with ``cgroup.kill`` do it atomically. Each pid is
        signalled through a pidfd after checking it is still in this cgroup, so a pid that
        exited and was reused by someone else's process is never hit.
        """
        deadline = time.monotonic() + timeout
        cgroup_kill = self._memory / "cgroup.kill"
        if self.kind == "v2" and cgroup_kill.exists():
            try:
                cgroupfs.write(cgroup_kill, "1")
            except OSError:
                pass  # removed meanwhile, or an old kernel: the loop below does it
        killed = 0
        while True:
            members = self._members()
            if not members:
                if killed:
                    log.info("cgroups.killed", agent=self.agent, count=killed)
                return True
            if time.monotonic() >= deadline:
                log.warning("cgroups.kill_left", agent=self.agent, pids=sorted(p for p, _ in members))
                return False
            for pid, key in members:
                killed += self._kill(pid, key)
            time.sleep(0.005)

    def _members(self) -> list[tuple[int, str]]:
        """Each pid once, with the hierarchy it was listed in (v1 lists it in memory and pids)."""
        found: dict[int, str] = {}
        for key, path in self.dirs.items():
            for pid in cgroupfs.read_pids(path / "cgroup.procs"):
                found.setdefault(pid, key)
        return list(found.items())

    def _kill(self, pid: int, key: str) -> int:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return 0
        except OSError:  # no pidfds (kernel < 5.3) or out of fds: check, then kill by number
            try:
                if self._holds(pid, key):
                    os.kill(pid, signal.SIGKILL)
                    return 1
            except ProcessLookupError:
                pass
            return 0
        try:
            if not self._holds(pid, key):
                return 0
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            return 1
        except ProcessLookupError:
            return 0
        finally:
            os.close(fd)

    def _holds(self, pid: int, key: str) -> bool:
        """Whether /proc/<pid>/cgroup puts pid in this cgroup (read after the pidfd pinned the process)."""
        rel = self._rels[key]
        for entry in cgroupfs.parse_self(cgroupfs.read(Path(f"/proc/{pid}/cgroup")) or ""):
            if (key == V2 and entry.hierarchy == "0" and not entry.controllers) or key in entry.controllers:
                return entry.path == rel
        return False

    def watch_oom(self, on_oom: Callable[[], None]) -> OomWatch:
        """Call ``on_oom()`` (on a daemon thread) for each OOM event of this cgroup.

        v1: an eventfd registered on memory.oom_control through cgroup.event_control; the
        caller then runs ``kill_all`` (the kernel kills one process, the agent must end whole).
        The kernel signals as the OOM begins (oom_kills() may not count it yet) and may signal
        more than once for one episode: on_oom must be idempotent, as kill_all is.
        v2: the kernel already kills the whole group (memory.oom.group=1); the watch still
        reports it, from memory.events (poll(2) wakes on its change; it is also re-read every
        ``V2_RECHECK_SECONDS``) whenever oom_kills() went up.
        The watch ends by itself when the cgroup is removed. Raises OSError when the cgroup does not exist.
        """
        return start_watch(self, on_oom)
