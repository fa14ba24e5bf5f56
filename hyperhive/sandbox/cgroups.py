"""Per-agent memory and pids limits, enforced with cgroups.

Each agent gets ``<own>/<namespace>/<agent>`` in every hierarchy used, where
``<own>`` is the daemon's own cgroup (never anywhere else: on a shared host or
inside a container, the daemon only owns its own subtree). cgroup v2 is used
when the daemon's own v2 cgroup offers ``memory`` and ``pids``; otherwise the
v1 ``memory`` and ``pids`` hierarchies (both are required: one limit without
the other lets a fork bomb or a leak take the host).

An agent's processes join its cgroup(s) before their first instruction: the
launcher (``launch.py``) writes its own pid to ``AgentCgroup.procs_files``
and only then drops privileges and execs the harness. An OOM kill anywhere in
the cgroup ends the whole agent, like systemd's ``OOMPolicy=stop``: on v2 the
kernel does it (``memory.oom.group=1``); on v1 ``watch_oom`` reports the event
and the caller runs ``kill_all``.

Everything that reads cgroup files tolerates a cgroup removed underneath
(zeros, ``None`` or empty lists, never an exception): usage is polled by the
dashboard while agents come and go.
"""

from __future__ import annotations

import errno
import os
import re
import select
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import hyperhive.logs as logs
from hyperhive.paths import Limits

__all__ = ["AgentCgroup", "CgroupError", "Cgroups", "Limits", "OomWatch", "V2_RECHECK_SECONDS"]

log = logs.get("hyperhive.cgroups")

Kind = Literal["v1", "v2"]

# One path component: no "/", no "." or "..", nothing that could name a control file ("memory.max").
_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_CONTROLLERS = ("memory", "pids")
_V2 = ""  # the key of the single v2 hierarchy in the per-hierarchy dicts
_DAEMON_LEAF = "daemon"
# v2 OOM watch: memory.events is also re-read this often, in case a poll notification is missed.
V2_RECHECK_SECONDS = 5.0


class CgroupError(RuntimeError):
    """A cgroup could not be put into the state asked for (e.g. old processes would not die)."""


def _check_component(name: str) -> str:
    """Refuse anything that is not one safe directory name (callers validate too; this is the last line)."""
    if not isinstance(name, str) or _COMPONENT.fullmatch(name) is None:
        raise ValueError(f"not a safe cgroup name: {name!r}")
    return name


# ---------------------------------------------------------------- file helpers


def _read(path: Path) -> str | None:
    """The file's text, or None when it (or its cgroup) is gone: ENOENT, ENODEV on a removed cgroup."""
    try:
        return path.read_text()
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    text = _read(path)
    if text is None:
        return None
    try:
        return int(text.split()[0])
    except (IndexError, ValueError):
        return None


def _parse_keyed(text: str | None) -> dict[str, int]:
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


def _read_pids(path: Path) -> list[int]:
    text = _read(path)
    return [int(p) for p in (text or "").split() if p.isdigit()]


def _write(path: Path, value: str) -> None:
    """One write(2) of ``value`` (cgroup files act per write; errors come back as the kernel's errno).

    O_CREAT only matters on a fake tree: on cgroupfs every file exists or the open fails.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _join_rel(rel: str, *parts: str) -> str:
    """A cgroup path as /proc/<pid>/cgroup shows it ("/" + components)."""
    return "/".join([rel.rstrip("/"), *parts]) if parts else rel


# ---------------------------------------------------------------- /proc/self/cgroup


@dataclass(frozen=True)
class _Entry:
    hierarchy: str  # "0" for v2
    controllers: tuple[str, ...]
    path: str


def _parse_self(text: str) -> list[_Entry]:
    entries = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            ctrl = tuple(c for c in parts[1].split(",") if c)
            entries.append(_Entry(parts[0], ctrl, parts[2]))
    return entries


def _own_dir(mount: Path, rel: str) -> Path:
    return mount / rel.lstrip("/") if rel.strip("/") else mount


def _v2_own(root: Path, entries: list[_Entry]) -> tuple[Path, str] | str:
    """(own dir, own rel path) of a usable v2 cgroup, or why there is none."""
    entry = next((e for e in entries if e.hierarchy == "0" and not e.controllers), None)
    if entry is None:
        return "no v2 entry in /proc/self/cgroup"
    if (root / "cgroup.controllers").is_file():
        mount = root
    elif (root / "unified" / "cgroup.controllers").is_file():
        mount = root / "unified"
    else:
        return f"no cgroup2 mount at {root} or {root / 'unified'}"
    own = _own_dir(mount, entry.path)
    offered = (_read(own / "cgroup.controllers") or "").split()
    missing = [c for c in _CONTROLLERS if c not in offered]
    if missing:
        return f"own cgroup {own} lacks {', '.join(missing)} in cgroup.controllers"
    if not os.access(own / "cgroup.subtree_control", os.W_OK) or not os.access(own, os.W_OK):
        return f"own cgroup {own} is not writable"
    return own, entry.path


def _v1_own(root: Path, entries: list[_Entry]) -> tuple[dict[str, Path], dict[str, str]] | str:
    """The own memory and pids dirs (and rel paths) in v1, or why there are none."""
    own: dict[str, Path] = {}
    rels: dict[str, str] = {}
    for controller in _CONTROLLERS:
        entry = next((e for e in entries if controller in e.controllers), None)
        if entry is None:
            return f"no v1 {controller} hierarchy in /proc/self/cgroup"
        mount = root / ",".join(entry.controllers)
        if not mount.is_dir():
            mount = root / controller
        path = _own_dir(mount, entry.path)
        if not (path / "cgroup.procs").is_file():
            return f"own v1 {controller} cgroup {path} not found"
        if not os.access(path, os.W_OK):
            return f"own v1 {controller} cgroup {path} is not writable"
        own[controller] = path
        rels[controller] = entry.path
    return own, rels


# ---------------------------------------------------------------- Cgroups


class Cgroups:
    """The daemon's namespace of agent cgroups in one cgroup version."""

    kind: Kind

    def __init__(self, kind: Kind, namespace: str, own: Mapping[str, Path], own_rel: Mapping[str, str]) -> None:
        self.kind = kind
        self.namespace = _check_component(namespace)
        self._own = dict(own)  # hierarchy key ("memory"/"pids", or "" for v2) → the daemon's own cgroup dir
        self._own_rel = dict(own_rel)

    def __repr__(self) -> str:
        return f"Cgroups({self.kind}, {self.namespace!r}, {[str(p) for p in self._own.values()]})"

    @classmethod
    def detect(
        cls,
        namespace: str,
        root: Path = Path("/sys/fs/cgroup"),
        self_cgroup: Path = Path("/proc/self/cgroup"),
    ) -> Cgroups | None:
        """v2 when usable, else v1 memory+pids, else None (logged as ``cgroups.unavailable``).

        Usable means the namespace dir could really be created under the own cgroup:
        a read-only or delegated-away tree shows up here, not at the first agent start.
        """
        _check_component(namespace)
        text = _read(self_cgroup)
        if text is None:
            log.warning("cgroups.unavailable", reason=f"cannot read {self_cgroup}")
            return None
        entries = _parse_self(text)
        reasons = []
        v2 = _v2_own(root, entries)
        if isinstance(v2, str):
            reasons.append(f"v2: {v2}")
        else:
            found = cls._claim("v2", namespace, {_V2: v2[0]}, {_V2: v2[1]})
            if isinstance(found, Cgroups):
                return found
            reasons.append(f"v2: {found}")
        v1 = _v1_own(root, entries)
        if isinstance(v1, str):
            reasons.append(f"v1: {v1}")
        else:
            found = cls._claim("v1", namespace, *v1, why_not_v2=reasons[0])
            if isinstance(found, Cgroups):
                return found
            reasons.append(f"v1: {found}")
        log.warning("cgroups.unavailable", reason="; ".join(reasons))
        return None

    @classmethod
    def _claim(
        cls, kind: Kind, namespace: str, own: dict[str, Path], rels: dict[str, str], why_not_v2: str | None = None
    ) -> Cgroups | str:
        """The Cgroups once the namespace dir exists in every hierarchy, or why it could not be made."""
        for path in own.values():
            try:
                (path / namespace).mkdir(exist_ok=True)
            except OSError as e:
                return f"cannot create {path / namespace}: {e.strerror}"
        found = cls(kind, namespace, own, rels)
        log.info("cgroups.detected", kind=kind, namespace=namespace, own=[str(p) for p in own.values()],
                 why_not_v2=why_not_v2)
        return found

    # ------------------------------------------------------------ agents

    def agent(self, agent: str) -> AgentCgroup:
        """A handle to the agent's cgroup(s) (existing or not), for usage, pids and kill; changes nothing."""
        _check_component(agent)
        dirs = {key: own / self.namespace / agent for key, own in self._own.items()}
        rels = {key: _join_rel(rel, self.namespace, agent) for key, rel in self._own_rel.items()}
        return AgentCgroup(self.kind, agent, dirs, rels)

    def prepare(self, agent: str, limits: Limits) -> AgentCgroup:
        """Create (or reuse, emptied) the agent's cgroup(s) and write its limits; idempotent."""
        _check_component(agent)
        if limits.memory_mb <= 0 or limits.pids <= 0:
            raise ValueError(f"limits must be positive: {limits}")
        if self.kind == "v2":
            self._ensure_v2_tree()
        cg = self.agent(agent)
        reused = False
        for path in cg.dirs.values():
            path.parent.mkdir(exist_ok=True)  # the namespace, should someone have removed it
            try:
                path.mkdir()
            except FileExistsError:
                reused = True
        if reused and not cg.kill_all():
            raise CgroupError(f"{agent}: processes of an earlier start would not die: {cg.pids()}")
        if self.kind == "v1":
            _write_v1_limits(cg.dirs["memory"], cg.dirs["pids"], limits)
        else:
            _write_v2_limits(cg.dirs[_V2], limits)
        log.info("cgroups.prepared", agent=agent, kind=self.kind, memory_mb=limits.memory_mb, pids=limits.pids,
                 reused=reused)
        return cg

    def forget(self, agent: str) -> None:
        """Kill whatever is left of the agent and remove its cgroup(s) (on destroy)."""
        cg = self.agent(agent)
        if not cg.kill_all():
            log.warning("cgroups.forget_failed", agent=agent, reason="processes left", pids=cg.pids())
            return
        for path in cg.dirs.values():
            error = _rmdir_retry(path)
            if error is not None:
                log.warning("cgroups.forget_failed", agent=agent, path=str(path), reason=error)
                return
        log.info("cgroups.forgotten", agent=agent)

    def discard_namespace(self) -> bool:
        """Remove the namespace dir(s) when no agent cgroup is left in them; True when gone.

        Not part of an agent's life: for tests and a clean uninstall.
        """
        gone = True
        for own in self._own.values():
            if _rmdir_retry(own / self.namespace, timeout=0.0) is not None:
                gone = False
        return gone

    # ------------------------------------------------------------ v2 tree

    def _ensure_v2_tree(self) -> None:
        """Enable memory and pids for the namespace and its children, on the way down from the own cgroup.

        The kernel refuses controllers in the subtree_control of a non-root cgroup that has processes
        ("no internal processes"), so the daemon's processes first move into the ``<own>/daemon`` leaf.
        """
        own = self._own[_V2]
        for attempt in range(3):
            if _has_controllers(own):
                break
            self._evacuate(own)
            try:
                _write(own / "cgroup.subtree_control", "+memory +pids")
                break
            except OSError as e:
                # EBUSY: a process appeared in <own> between the move and the write; move it too.
                if e.errno != errno.EBUSY or attempt == 2:
                    raise
        ns = own / self.namespace
        ns.mkdir(exist_ok=True)
        if not _has_controllers(ns):
            _write(ns / "cgroup.subtree_control", "+memory +pids")

    def _evacuate(self, own: Path) -> None:
        """Move every process of ``own`` (the daemon, its helpers) into ``<own>/daemon``; not for the root."""
        if not (own / "cgroup.type").exists():
            return  # the root cgroup: processes there are allowed beside enabled controllers
        pids = _read_pids(own / "cgroup.procs")
        if not pids:
            return
        leaf = own / _DAEMON_LEAF
        leaf.mkdir(exist_ok=True)
        moved = []
        for pid in pids:
            try:
                _write(leaf / "cgroup.procs", str(pid))
                moved.append(pid)
            except ProcessLookupError:
                pass  # it exited meanwhile
        log.info("cgroups.daemon_moved", to=str(leaf), pids=moved)


def _has_controllers(path: Path) -> bool:
    enabled = (_read(path / "cgroup.subtree_control") or "").replace("+", " ").split()
    return all(c in enabled for c in _CONTROLLERS)


def _write_v1_limits(memory: Path, pids: Path, limits: Limits) -> None:
    """memory.limit_in_bytes (+ memsw, so swap does not hide the limit), peak reset, pids.max.

    The kernel keeps memsw >= limit at every step (EINVAL otherwise): raising writes memsw
    first, lowering writes the limit first. Should the current value be misread, the other
    order is tried once.
    """
    new = limits.memory_mb * 1024 * 1024
    limit = memory / "memory.limit_in_bytes"
    memsw = memory / "memory.memsw.limit_in_bytes"
    if memsw.exists():
        current = _read_int(limit) or 0
        order = [memsw, limit] if new >= current else [limit, memsw]
        try:
            for path in order:
                _write(path, str(new))
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            for path in reversed(order):
                _write(path, str(new))
    else:
        _write(limit, str(new))
    for peak in ("memory.max_usage_in_bytes", "memory.memsw.max_usage_in_bytes"):
        if (memory / peak).exists():
            _write(memory / peak, "0")  # peak per start, not per cgroup lifetime
    _write(pids / "pids.max", str(limits.pids))


def _write_v2_limits(path: Path, limits: Limits) -> None:
    """memory.max, no swap, one OOM kills the whole group, pids.max."""
    _write(path / "memory.max", str(limits.memory_mb * 1024 * 1024))
    if (path / "memory.swap.max").exists():
        _write(path / "memory.swap.max", "0")
    _write(path / "memory.oom.group", "1")
    _write(path / "pids.max", str(limits.pids))


def _rmdir_retry(path: Path, timeout: float = 1.0) -> str | None:
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


# ---------------------------------------------------------------- AgentCgroup


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
        return self.dirs["memory" if self.kind == "v1" else _V2]

    @property
    def _pids_dir(self) -> Path:
        return self.dirs["pids" if self.kind == "v1" else _V2]

    def oom_kills(self) -> int:
        """How many OOM kills this cgroup has seen (since it was created; compare before/after a start)."""
        if self.kind == "v1":
            return _parse_keyed(_read(self._memory / "memory.oom_control")).get("oom_kill", 0)
        events = _parse_keyed(_read(self._memory / "memory.events"))
        return events.get("oom_kill", 0) + events.get("oom_group_kill", 0)

    def usage(self) -> dict[str, int | None]:
        """Memory now and at peak, and the task count; None for what cannot be read."""
        if self.kind == "v1":
            current = _read_int(self._memory / "memory.usage_in_bytes")
            peak = _read_int(self._memory / "memory.max_usage_in_bytes")
        else:
            current = _read_int(self._memory / "memory.current")
            peak = _read_int(self._memory / "memory.peak")
        return {"memory_bytes": current, "memory_peak_bytes": peak, "pids": _read_int(self._pids_dir / "pids.current")}

    def pids(self) -> list[int]:
        """The processes (thread-group ids) in the agent's cgroup(s), in any hierarchy."""
        return sorted({pid for procs in self.procs_files for pid in _read_pids(procs)})

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
                _write(cgroup_kill, "1")
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
            for pid in _read_pids(path / "cgroup.procs"):
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
        for entry in _parse_self(_read(Path(f"/proc/{pid}/cgroup")) or ""):
            if (key == _V2 and entry.hierarchy == "0" and not entry.controllers) or key in entry.controllers:
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
        watch: OomWatch = _V1OomWatch(self, on_oom) if self.kind == "v1" else _V2OomWatch(self, on_oom)
        watch._start()
        return watch


# ---------------------------------------------------------------- OOM watches


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
            _write(memory / "cgroup.event_control", f"{efd} {ofd}")
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
            events_fd = os.open(cg.dirs[_V2] / "memory.events", os.O_RDONLY | os.O_CLOEXEC)
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
        events = _parse_keyed(text)
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
