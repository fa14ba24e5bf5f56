"""The Ray actor of one agent (issue 18): its container on whatever node Ray put it.

`RayBackend` creates it detached, named ``hyperhive:<state-dir-hash>:<agent>``
in the ``hyperhive`` namespace, ``max_restarts=-1`` (Ray restarts it on a node
that satisfies its resources when its own dies), ``max_task_retries=0`` (a
call pending when the actor dies fails: that is how node loss is seen), and
threaded (``max_concurrency``): ``wait`` long-polls while ``stop`` gets
through.

On its node the actor runs the harness exactly as the local backend does: it
constructs a `LocalBackend` for its agent there (the same sandbox, the same
uid, the same cgroup limits, the same log relay into ``agents/<n>/harness.log``)
and calls its ``start``/``stop``. The agents dir is shared storage (every node
mounts it at the same path); the harness reaches the daemon's sockets under
``agents/<n>/run/`` (on one host) or, later, the daemon's TLS channel through
``link``.

Unlike the local backend's, this harness must not outlive its container: a
`ray_tether` beside it ends its tree and cgroup when the actor's process dies.

Nothing here runs at construction beyond storing its arguments: Ray re-runs
``__init__`` at every restart, and an exception there would end the actor.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hyperhive.logs as logs
from hyperhive.agent_link import AgentLink
from hyperhive.agent_wire import CHANNELS
from hyperhive.backends.local import LocalBackend, LocalHandle
from hyperhive.backends.ray_link import NodePaths, node_run_dir, remove_run_dir, start_link
from hyperhive.backends.ray_tether import DONE, identity
from hyperhive.names import AgentName
from hyperhive.paths import Limits, StatePaths

__all__ = ["NodeAgent", "NodeOptions"]

_log = logs.get("hyperhive.backend.ray_node")

RUNNING, ENDED, UNKNOWN = "running", "ended", "unknown"  # wait()'s first item


@dataclass(frozen=True)
class NodeOptions:
    """How the node's LocalBackend is made (the daemon's settings, carried in the creation call)."""

    sandbox: str = "auto"
    memory_mb: int = 4096
    pids: int = 512
    uid_base: int = 1_900_000_000
    gateway_key: bool = False
    cgroups: bool = True


@dataclass
class _Run:
    handle: LocalHandle
    driver: str
    tether: int | None  # the write end of the tether's pipe
    done: threading.Event = field(default_factory=threading.Event)
    result: tuple[int | None, str | None] = (None, None)


def _release(tether: int) -> None:
    """Tell a tether (the write end of its pipe) that all is well, and let it go."""
    try:
        os.write(tether, DONE)
    except OSError:
        pass
    os.close(tether)


class NodeAgent:
    """One agent's container. Methods are Ray actor calls; each is short except ``wait``."""

    def __init__(self, name: str, root: str, agents_root: str | None, options: NodeOptions,
                 placement: dict[str, Any] | None = None, link: dict[str, Any] | None = None) -> None:
        """``placement``: the Ray options it was created with (`RayBackend` compares them
        with the agent's placement at each start). ``link``: how the harness reaches the
        daemon across hosts: {agent, secret, address, ca_pem} (`AgentListen.credentials`);
        the relay (ray_link.py) binds the harness's sockets in a node-local run dir. None:
        the harness uses the daemon's unix sockets in agents/<n>/run (one host). It comes
        only as this creation argument, never on a command line or in agent.json."""
        self.name = AgentName(name)
        self.paths = StatePaths(Path(root), Path(agents_root) if agents_root else None)
        self.options = options
        self.placement = placement or {}
        self._link_args = link  # holds the secret: never logged, never shown
        self._relay: AgentLink | None = None
        self._link_tether: int | None = None  # the write end of the relay's sockets' tether
        self._local: LocalBackend | None = None
        self._run: _Run | None = None
        self._lock = threading.Lock()  # start/stop/destroy: one at a time
        self._changed = threading.Condition()

    # --- the harness ---------------------------------------------------------------
    def _backend(self) -> LocalBackend:
        if self._local is None:
            logs.configure(sys.stderr)  # the worker's log file, never the daemon's stdout
            o = self.options
            paths = self.paths
            if self._link_args is not None:  # the harness's sockets are the relay's, on this node
                paths = NodePaths(paths.root, paths.agents_root, run_dir=node_run_dir(paths.root, self.name))
            self._local = LocalBackend(paths, o.sandbox, limits=Limits(o.memory_mb, o.pids),
                                       uid_base=o.uid_base, gateway_key=o.gateway_key, cgroups=o.cgroups)
        return self._local

    def start(self, driver: str) -> int:
        """Start the harness (one already running is stopped first); its top pid."""
        with self._lock:
            if self._run is not None and not self._run.done.is_set():
                self._stop(5.0)
            local = self._backend()
            self._link(local)
            holder: list[_Run] = []

            def on_exit(rc: int | None, reason: str | None) -> None:  # LocalBackend's watcher thread
                run = holder[0] if holder else None
                if run is not None:
                    self._ended(run, rc, reason)

            handle = local.start(self.name, driver, on_exit)
            run = _Run(handle, driver, self._tether(handle))
            holder.append(run)
            if handle.proc.ended.is_set() and handle.watcher is not None:
                handle.watcher.join(15)  # it may have reported before the holder was filled
                self._ended(run, handle.proc.returncode, None)  # no-op when it had not
            with self._changed:
                self._run = run
                self._changed.notify_all()
            _log.info("ray_node.started", agent=self.name, pid=handle.pid, sandboxed=local.sandboxed,
                      node_id=self.node()["node_id"])
            return handle.pid

    def _link(self, local: LocalBackend) -> None:
        """Start the relay (once per actor: it outlives each harness) before the harness."""
        if self._link_args is None or self._relay is not None:
            return
        account = local.account(self.name)
        owner = (account.uid, account.gid) if account.switch else None
        run_dir = local.paths.run(self.name)
        self._relay = start_link(self._link_args, run_dir, owner, web=(local.paths.state(self.name), account.uid))
        bound = [os.lstat(self._relay.path(c)) for c in CHANNELS]  # its sockets go if this process dies
        self._link_tether = self._spawn_tether(["--run-dir", str(run_dir),
                                                *map(identity, bound)])

    def _tether(self, handle: LocalHandle) -> int | None:
        procs = [str(p) for p in handle.cgroup.procs_files] if handle.cgroup is not None else []
        return self._spawn_tether([str(handle.pid), *procs])

    def _spawn_tether(self, args: list[str]) -> int | None:
        """A `ray_tether` with ``args``; the write end of its pipe (None: it could not start)."""
        read_end, write_end = os.pipe()
        try:
            tether = subprocess.Popen(
                [sys.executable, "-I", "-m", "hyperhive.backends.ray_tether", *args],
                stdin=read_end, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/",
                env={"PATH": "/usr/bin:/bin"}, close_fds=True)
            tether.wait(10)  # it forked and left: the tether proper is its child
        except (OSError, subprocess.TimeoutExpired) as exc:
            _log.error("ray_node.no_tether", agent=self.name, error=str(exc))
            os.close(write_end)
            return None
        finally:
            os.close(read_end)
        return write_end

    def _ended(self, run: _Run, rc: int | None, reason: str | None) -> None:
        """The first report of the run's end counts; the tether is told all is well."""
        with self._changed:
            if run.done.is_set():
                return
            run.result = (rc, reason)
            if run.tether is not None:
                _release(run.tether)
                run.tether = None
            run.done.set()
            self._changed.notify_all()

    def wait(self, pid: int, timeout: float = 10.0) -> tuple[str, int | None, str | None]:
        """Long poll on the harness ``pid``: ("ended", rc, reason) once it has ended,
        ("running", None, None) after ``timeout``, ("unknown", None, None) when this
        actor never ran it (Ray restarted the actor since)."""
        with self._changed:
            run = self._run
            if run is None or run.handle.pid != pid:
                return UNKNOWN, None, None
            self._changed.wait_for(run.done.is_set, timeout=max(0.0, min(timeout, 60.0)))
            return (ENDED, *run.result) if run.done.is_set() else (RUNNING, None, None)

    def stop(self, timeout: float = 5.0) -> int | None:
        """Stop the harness (``timeout`` <= 0: SIGKILL at once); its exit status."""
        with self._lock:
            return self._stop(timeout)

    def _stop(self, timeout: float) -> int | None:
        run = self._run
        if run is None:
            return None
        if run.done.is_set():
            return run.result[0]
        rc = self._backend().stop(run.handle, timeout=timeout)
        self._ended(run, rc, None)  # LocalBackend's watcher has reported it already (stop joins it)
        _log.info("ray_node.stopped", agent=self.name, returncode=rc)
        return rc

    def kill(self) -> int | None:
        return self.stop(0.0)

    def destroy(self) -> None:
        """Before the actor is killed for good: stop the harness, remove its cgroup."""
        with self._lock:
            self._stop(0.0)
            local = self._backend()
            local.destroy(self.name)
            if self._relay is not None:
                self._relay.stop()
                self._relay = None
            if self._link_tether is not None:  # gone on purpose: nothing for its tether to do
                _release(self._link_tether)
                self._link_tether = None
            if self._link_args is not None:
                remove_run_dir(local.paths.run(self.name))

    # --- observation ---------------------------------------------------------------
    def placed(self) -> dict[str, Any]:
        """The Ray options this actor was created with (an answer also says it is up)."""
        return self.placement

    def running(self) -> dict[str, Any] | None:
        """The running harness: {"pid", "driver", "sandboxed", "node"}; None when none runs."""
        run = self._run
        if run is None or run.done.is_set():
            return None
        return {"pid": run.handle.pid, "driver": run.driver, "sandboxed": self._backend().sandboxed,
                "node": self.node()}

    def usage(self) -> dict[str, int | None] | None:
        return self._backend().usage(self.name)

    def node(self) -> dict[str, str]:
        """The node this actor runs on: {"node_id", "address"} (Ray's node id and IP)."""
        import ray

        ctx = ray.get_runtime_context()
        address: str = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
        return {"node_id": ctx.get_node_id(), "address": address}
