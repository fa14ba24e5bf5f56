"""OOM watches: a daemon thread per agent cgroup that reports its OOM events
(`AgentCgroup.watch_oom` starts one).

v1: an eventfd registered on memory.oom_control through cgroup.event_control;
the kernel kills one process, so the caller runs ``kill_all`` (the agent must
end whole). v2: the kernel already kills the whole group
(``memory.oom.group=1``); the watch still reports it, from memory.events
(poll(2) wakes on its change; it is also re-read every ``V2_RECHECK_SECONDS``
in case a notification is missed). A watch ends by itself when its cgroup is
removed.
"""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import hyperhive.logs as logs
from hyperhive.sandbox import cgroupfs

if TYPE_CHECKING:
    from hyperhive.sandbox.cgroup_agent import AgentCgroup

__all__ = ["V2_RECHECK_SECONDS", "OomWatch", "start_watch"]

log = logs.get("hyperhive.cgroups")

# v2 OOM watch: memory.events is also re-read this often, in case a poll notification is missed.
V2_RECHECK_SECONDS = 5.0


class OomWatch:
    """A daemon thread waiting for one agent cgroup's OOM events; ``close()`` ends it.

    The fds are closed by the thread as it ends, under a lock that ``close()`` takes to wake it,
    so ``close()`` never writes to an fd number that was closed and reused meanwhile.
    """

    def __init__(self, cg: AgentCgroup, on_oom: Callable[[], None], wake_fd: int, fds: list[int]) -> None:
        self._cg = cg
        self._on_oom = on_oom
        self._wake_fd = wake_fd
        self._fds = [wake_fd, *fds]
        self._lock = threading.Lock()
        self._open = True
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=f"oom-watch-{cg.agent}", daemon=True)

    def _start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop watching; idempotent, returns once the thread is gone (unless called from on_oom)."""
        with self._lock:
            self._closing = True
            if self._open:
                os.eventfd_write(self._wake_fd, 1)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)

    def _release(self) -> None:
        with self._lock:
            if self._open:
                self._open = False
                for fd in self._fds:
                    os.close(fd)

    def _run(self) -> None:
        try:
            while True:
                self._wait()
                if self._closing:
                    return
                fired = self._check()
                if fired is None:
                    log.info("cgroups.oom_watch_ended", agent=self._cg.agent, reason="cgroup removed")
                    return
                if fired:
                    self._fire()
        except Exception:
            log.exception("cgroups.oom_watch_failed", agent=self._cg.agent)
        finally:
            self._release()

    def _fire(self) -> None:
        log.warning("cgroups.oom", agent=self._cg.agent, oom_kills=self._cg.oom_kills())
        try:
            self._on_oom()
        except Exception:
            log.exception("cgroups.on_oom_failed", agent=self._cg.agent)

    def _wait(self) -> None:
        raise NotImplementedError

    def _check(self) -> bool | None:
        """True: an OOM event; False: nothing; None: the cgroup is gone."""
        raise NotImplementedError


class _V1OomWatch(OomWatch):
    """The eventfd registered on memory.oom_control; close() writes to the same eventfd."""

    def __init__(self, cg: AgentCgroup, on_oom: Callable[[], None]) -> None:
        memory = cg.dirs["memory"]
        efd = os.eventfd(0, os.EFD_CLOEXEC)
        try:
            ofd = os.open(memory / "memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            os.close(efd)
            raise
        try:
            cgroupfs.write(memory / "cgroup.event_control", f"{efd} {ofd}")
        except OSError:
            os.close(efd)
            os.close(ofd)
            raise
        self._control_fd = ofd
        super().__init__(cg, on_oom, efd, [ofd])

    def _wait(self) -> None:
        os.eventfd_read(self._wake_fd)

    def _check(self) -> bool | None:
        # The kernel also signals the eventfd when the cgroup is removed; then the held
        # memory.oom_control fd reads ENODEV (a cgroup re-created under the same name is another file).
        try:
            os.pread(self._control_fd, 4096, 0)
        except OSError:
            return None
        return True


class _V2OomWatch(OomWatch):
    """poll(2) on memory.events (kernfs wakes POLLPRI on change) and the wake eventfd."""

    def __init__(self, cg: AgentCgroup, on_oom: Callable[[], None]) -> None:
        efd = os.eventfd(0, os.EFD_CLOEXEC)
        try:
            events_fd = os.open(cg.dirs[cgroupfs.V2] / "memory.events", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            os.close(efd)
            raise
        self._events_fd = events_fd
        self._poll = select.poll()
        self._poll.register(events_fd, select.POLLPRI | select.POLLERR)
        self._poll.register(efd, select.POLLIN)
        super().__init__(cg, on_oom, efd, [events_fd])
        self._seen = self._count() or 0

    def _count(self) -> int | None:
        try:
            os.lseek(self._events_fd, 0, os.SEEK_SET)
            text = os.read(self._events_fd, 4096).decode()
        except OSError:
            return None
        events = cgroupfs.parse_keyed(text)
        return events.get("oom_kill", 0) + events.get("oom_group_kill", 0)

    def _wait(self) -> None:
        self._poll.poll(V2_RECHECK_SECONDS * 1000)

    def _check(self) -> bool | None:
        count = self._count()
        if count is None:
            return None
        fired = count > self._seen
        self._seen = max(self._seen, count)
        return fired


def start_watch(cg: AgentCgroup, on_oom: Callable[[], None]) -> OomWatch:
    """The running watch of ``cg`` for its cgroup version; OSError when the cgroup does not exist."""
    watch: OomWatch = _V1OomWatch(cg, on_oom) if cg.kind == "v1" else _V2OomWatch(cg, on_oom)
    watch._start()
    return watch
