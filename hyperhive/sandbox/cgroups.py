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

This module finds the hierarchies and makes and removes agent cgroups
(`Cgroups`); one agent's handle is `cgroup_agent.AgentCgroup`, its OOM watch
`oom_watch`, and the control files themselves are read and written in
`cgroupfs`.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from pathlib import Path

import hyperhive.logs as logs
from hyperhive.paths import Limits
from hyperhive.sandbox import cgroupfs
from hyperhive.sandbox.cgroup_agent import AgentCgroup
from hyperhive.sandbox.cgroupfs import CONTROLLERS, V2, Entry, Kind, check_component
from hyperhive.sandbox.oom_watch import V2_RECHECK_SECONDS, OomWatch

__all__ = ["AgentCgroup", "CgroupError", "Cgroups", "Limits", "OomWatch", "V2_RECHECK_SECONDS"]

log = logs.get("hyperhive.cgroups")

_DAEMON_LEAF = "daemon"


class CgroupError(RuntimeError):
    """A cgroup could not be put into the state asked for (e.g. old processes would not die)."""


# ---------------------------------------------------------------- the daemon's own cgroups


def _v2_own(root: Path, entries: list[Entry]) -> tuple[Path, str] | str:
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
    own = cgroupfs.own_dir(mount, entry.path)
    offered = (cgroupfs.read(own / "cgroup.controllers") or "").split()
    missing = [c for c in CONTROLLERS if c not in offered]
    if missing:
        return f"own cgroup {own} lacks {', '.join(missing)} in cgroup.controllers"
    if not os.access(own / "cgroup.subtree_control", os.W_OK) or not os.access(own, os.W_OK):
        return f"own cgroup {own} is not writable"
    return own, entry.path


def _v1_own(root: Path, entries: list[Entry]) -> tuple[dict[str, Path], dict[str, str]] | str:
    """The own memory and pids dirs (and rel paths) in v1, or why there are none."""
    own: dict[str, Path] = {}
    rels: dict[str, str] = {}
    for controller in CONTROLLERS:
        entry = next((e for e in entries if controller in e.controllers), None)
        if entry is None:
            return f"no v1 {controller} hierarchy in /proc/self/cgroup"
        mount = root / ",".join(entry.controllers)
        if not mount.is_dir():
            mount = root / controller
        path = cgroupfs.own_dir(mount, entry.path)
        if not (path / "cgroup.procs").is_file():
            return f"own v1 {controller} cgroup {path} not found"
        if not os.access(path, os.W_OK):
            return f"own v1 {controller} cgroup {path} is not writable"
        own[controller] = path
        rels[controller] = entry.path
    return own, rels


def _above_our_leaf(own: Path, rel: str, namespace: str) -> tuple[Path, str]:
    """The own cgroup of a daemon started from inside ``<own>/daemon``, the leaf an
    earlier daemon moved its cgroup's processes into (the shell that started it
    with them): the cgroup above, which holds the agents' namespace, so the agents
    an earlier daemon left running are found again (issue 16)."""
    if own.name == _DAEMON_LEAF and (own.parent / namespace).is_dir():
        return own.parent, rel.rpartition("/")[0] or "/"
    return own, rel


# ---------------------------------------------------------------- Cgroups


class Cgroups:
    """The daemon's namespace of agent cgroups in one cgroup version."""

    kind: Kind

    def __init__(self, kind: Kind, namespace: str, own: Mapping[str, Path], own_rel: Mapping[str, str]) -> None:
        self.kind = kind
        self.namespace = check_component(namespace)
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
        check_component(namespace)
        text = cgroupfs.read(self_cgroup)
        if text is None:
            log.warning("cgroups.unavailable", reason=f"cannot read {self_cgroup}")
            return None
        entries = cgroupfs.parse_self(text)
        reasons = []
        v2 = _v2_own(root, entries)
        if isinstance(v2, str):
            reasons.append(f"v2: {v2}")
        else:
            own, rel = _above_our_leaf(*v2, namespace)
            found = cls._claim("v2", namespace, {V2: own}, {V2: rel})
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
        check_component(agent)
        dirs = {key: own / self.namespace / agent for key, own in self._own.items()}
        rels = {key: cgroupfs.join_rel(rel, self.namespace, agent) for key, rel in self._own_rel.items()}
        return AgentCgroup(self.kind, agent, dirs, rels)

    def prepare(self, agent: str, limits: Limits) -> AgentCgroup:
        """Create (or reuse, emptied) the agent's cgroup(s) and write its limits; idempotent."""
        check_component(agent)
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
            cgroupfs.write_v1_limits(cg.dirs["memory"], cg.dirs["pids"], limits)
        else:
            cgroupfs.write_v2_limits(cg.dirs[V2], limits)
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
            error = cgroupfs.rmdir_retry(path)
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
            if cgroupfs.rmdir_retry(own / self.namespace, timeout=0.0) is not None:
                gone = False
        return gone

    # ------------------------------------------------------------ v2 tree

    def _ensure_v2_tree(self) -> None:
        """Enable memory and pids for the namespace and its children, on the way down from the own cgroup.

        The kernel refuses controllers in the subtree_control of a non-root cgroup that has processes
        ("no internal processes"), so the daemon's processes first move into the ``<own>/daemon`` leaf.
        """
        own = self._own[V2]
        for attempt in range(3):
            if cgroupfs.has_controllers(own):
                break
            self._evacuate(own)
            try:
                cgroupfs.write(own / "cgroup.subtree_control", "+memory +pids")
                break
            except OSError as e:
                # EBUSY: a process appeared in <own> between the move and the write; move it too.
                if e.errno != errno.EBUSY or attempt == 2:
                    raise
        ns = own / self.namespace
        ns.mkdir(exist_ok=True)
        if not cgroupfs.has_controllers(ns):
            cgroupfs.write(ns / "cgroup.subtree_control", "+memory +pids")

    def _evacuate(self, own: Path) -> None:
        """Move every process of ``own`` (the daemon, its helpers) into ``<own>/daemon``; not for the root."""
        if not (own / "cgroup.type").exists():
            return  # the root cgroup: processes there are allowed beside enabled controllers
        pids = cgroupfs.read_pids(own / "cgroup.procs")
        if not pids:
            return
        leaf = own / _DAEMON_LEAF
        leaf.mkdir(exist_ok=True)
        moved = []
        for pid in pids:
            try:
                cgroupfs.write(leaf / "cgroup.procs", str(pid))
                moved.append(pid)
            except ProcessLookupError:
                pass  # it exited meanwhile
        log.info("cgroups.daemon_moved", to=str(leaf), pids=moved)
