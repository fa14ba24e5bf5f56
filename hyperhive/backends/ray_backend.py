"""The `ray` backend (issue 18): each agent's container is a Ray actor, placed,
restarted and moved by Ray; the daemon stays on its host.

Entry point: `open_ray_backend(address, paths, …)` connects (``--ray-address``,
fast or one `RayUnreachable` line: ray_connect.py) and returns the backend.

Per agent a detached `NodeAgent` (ray_node.py), named
``hyperhive:<state-dir-hash>:<agent>`` in the ``hyperhive`` namespace, created
with the agent's placement (placement.py: agent.json's ``placement``, read
from its applied config by default) and ``max_restarts=-1``. Its harness runs
on its node through a `LocalBackend` there: the same sandbox and limits.

- ``start``: create the actor (or take the existing one: ``get_if_exists``;
  one created with another placement is replaced while nothing runs in it),
  start the harness, watch it (ray_watch.py).
- an unasked end → ``on_exit(rc, reason)`` once, as the local backend's;
  the actor's node dying → ``on_exit(None, "node lost")``, the old node kept
  (`last_node`). ContainerActor then restarts it through ``start``, which
  finds the actor Ray has restarted (or is restarting) on a node that has
  the resources.
- the actor is the container: it lives while its harness does, so a stopped
  (or hibernating) agent holds nothing on any node. ``stop``/kill (timeout
  <= 0) end the harness then the actor (``ray.kill(no_restart=True)``), as
  does an unasked end; only after a loss is an actor left idle, restarted by
  Ray, for the next ``start``. ``destroy``: whatever is left, gone.
- ``adopt`` (a new daemon): the named actor exists and its harness runs →
  taken, unkicked (an idle one is ended); ``release``: stop watching, it runs on.
- ``node(name)`` / ``nodes_in_use()``: where agents run, for ``hive ls`` and
  ``/metrics``; ``check(placement)``: refuse at spawn what no node can hold.

Every Ray call has a deadline: an actor thread is never held by a cluster
that does not answer. What needs shared storage: the agents dir (harness.log,
state, workspace, run dir) and today also the applied dir (``<state>/applied``),
which the node's harness binds read-only.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

import hyperhive.logs as logs
from hyperhive.backends.base import Backend, ExitCallback
from hyperhive.backends.local import unreachable_for_agents
from hyperhive.backends.ray_connect import NAMESPACE, RayUnreachable, connect
from hyperhive.backends.ray_node import NodeAgent, NodeOptions
from hyperhive.backends.ray_watch import ACTOR_LOST, NODE_LOST, QUERY, RayHandle, cluster_nodes, watch
from hyperhive.errors import BackendFailed, BadRequest, HiveError
from hyperhive.journal import check_unit_and_lines, tail_lines
from hyperhive.names import AgentName
from hyperhive.paths import CONFIG_FILE, StatePaths
from hyperhive.placement import Placement, check_placement, parse_placement_json
from hyperhive.sandbox.accounts import Account, account_for

__all__ = ["ACTOR_LOST", "NODE_LOST", "RayBackend", "RayHandle", "RayUnreachable", "actor_name",
           "applied_placement", "open_ray_backend"]

_log = logs.get("hyperhive.backend.ray")

START_SECONDS = 120.0  # the actor placed and up (a new worker process), then the harness started
STOP_MARGIN = 30.0  # beyond the stop's own grace
MAX_CONCURRENCY = 8  # wait (one, long-polling) + stop + observations
_CONFIG_MAX = 1 << 20
_DEFAULTS = NodeOptions()


def state_hash(paths: StatePaths) -> str:
    return hashlib.sha256(str(paths.root.resolve()).encode()).hexdigest()[:10]


def actor_name(paths: StatePaths, name: AgentName) -> str:
    return f"hyperhive:{state_hash(paths)}:{name}"


def applied_placement(paths: StatePaths, name: AgentName) -> Placement:
    """The ``placement`` of the agent's applied agent.json (daemon-owned); none when absent."""
    path = paths.applied(name) / CONFIG_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return Placement()
    except OSError as exc:  # a link (ELOOP) among them: never followed
        raise BadRequest(f"{path} cannot be read: {exc.strerror}") from None
    try:
        raw = json.loads(os.read(fd, _CONFIG_MAX))
    except (OSError, ValueError) as exc:
        raise BadRequest(f"{path} is not a readable JSON object: {exc}") from None
    finally:
        os.close(fd)
    return parse_placement_json(raw["placement"], str(path)) if isinstance(raw, dict) and "placement" in raw \
        else Placement()


def _remote() -> Any:
    return ray.remote(NodeAgent)


class RayBackend:
    kind = "ray"

    def __init__(self, paths: StatePaths, options: NodeOptions = _DEFAULTS, *,
                 placement_of: Callable[[AgentName], Placement] | None = None,
                 start_seconds: float = START_SECONDS, owns_connection: bool = False,
                 link_of: Callable[[AgentName], dict[str, str] | None] | None = None) -> None:
        """Ray must be connected already (`open_ray_backend` does it). ``placement_of``:
        an agent's placement (default: its applied agent.json's). ``link_of``: the
        credentials of the agent's TLS relay (``AgentListen.credentials``: a new secret
        each call), asked only when its actor is created; None: no relay (the harness
        uses the daemon's unix sockets under the shared agents dir)."""
        self.paths = paths
        self.options = options
        self._placement_of = placement_of or (lambda name: applied_placement(paths, name))
        self._start_seconds = start_seconds
        self._owns_connection = owns_connection
        self._link_of = link_of
        self._handles: dict[AgentName, RayHandle] = {}  # running harnesses
        self._lost: dict[AgentName, dict[str, str]] = {}  # the node of each agent's last loss
        self.switch_uid = os.geteuid() == 0 and unreachable_for_agents(paths) is None
        self._actor_class = _remote()

    @property
    def sandboxed(self) -> bool:
        """As asked (``--sandbox``): each node's LocalBackend decides, and refuses to
        start an agent unsandboxed under ``on``; ``auto`` may run one unsandboxed (logged)."""
        return self.options.sandbox != "off"

    # --- actors ---------------------------------------------------------------------
    def _get(self, name: AgentName) -> Any | None:
        try:
            return ray.get_actor(actor_name(self.paths, name), namespace=NAMESPACE)
        except ValueError:
            return None

    def _create(self, name: AgentName, wanted: dict[str, Any]) -> Any:
        existing = self._get(name)
        if existing is not None:  # its link holds the secret it was made with: never issue another
            return existing
        link = None if self._link_of is None else self._link_of(name)  # a creation argument only
        return self._actor_class.options(
            name=actor_name(self.paths, name), namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
            max_restarts=-1, max_task_retries=0, max_concurrency=MAX_CONCURRENCY, **wanted,
        ).remote(name, str(self.paths.root), None if self.paths.agents_root is None else str(self.paths.agents_root),
                 self.options, wanted, link)

    def _call(self, actor: Any, method: str, *args: Any, timeout: float = QUERY, what: str = "") -> Any:
        try:
            return ray.get(getattr(actor, method).remote(*args), timeout=timeout)
        except GetTimeoutError:
            raise BackendFailed(f"the Ray actor {what or method} did not answer within {timeout:g}s") from None
        except RayActorError as exc:
            raise BackendFailed(f"the Ray actor died during {what or method}: {str(exc).splitlines()[0]}") from None
        except RayTaskError as exc:  # raised on its node (the harness could not start, say)
            cause = getattr(exc, "cause", None) or exc
            raise BackendFailed(f"{what or method} failed on its node: {str(cause).splitlines()[0][:500]}") from None

    def _actor(self, name: AgentName, placement: Placement) -> Any:
        """The agent's actor, up and created with ``placement`` (an idle one with another is replaced)."""
        wanted = placement.ray_options()
        actor = self._create(name, wanted)
        placed = self._call(actor, "placed", timeout=self._start_seconds,
                            what=f"of {name} (placed with {placement.describe()}: no node may have room now)")
        if placed == wanted:
            return actor
        if self._call(actor, "running") is not None:
            _log.warning("container.placement_pending", agent=name, placed=placed, wanted=wanted)
            return actor  # the next start after a stop moves it
        _log.info("container.replaced", agent=name, placed=placed, wanted=wanted)
        self._kill(name, actor)
        actor = self._create(name, wanted)
        self._call(actor, "placed", timeout=self._start_seconds, what=f"of {name}")
        return actor

    def _kill(self, name: AgentName, actor: Any) -> None:
        """End the actor for good and wait (bounded) until its name is free again."""
        try:
            ray.kill(actor, no_restart=True)
        except ValueError:
            return  # not an actor handle any more (already gone)
        deadline = time.monotonic() + QUERY
        while self._get(name) is not None and time.monotonic() < deadline:
            time.sleep(0.05)

    def _lost_node(self, handle: RayHandle, reason: str) -> None:
        self._lost[handle.name] = dict(handle.node)
        if self._handles.get(handle.name) is handle:
            del self._handles[handle.name]

    def _watch(self, handle: RayHandle, on_exit: ExitCallback) -> None:
        def exited(rc: int | None, reason: str | None) -> None:
            if self._handles.get(handle.name) is handle:
                del self._handles[handle.name]
            if reason not in (NODE_LOST, ACTOR_LOST):  # the harness ended: so does its container
                self._kill(handle.name, handle.actor)
            on_exit(rc, reason)

        self._handles[handle.name] = handle
        watch(handle, exited, self._lost_node)

    # --- lifecycle ------------------------------------------------------------------
    def start(self, name: AgentName, driver: str, on_exit: ExitCallback) -> RayHandle:
        """Start the agent's harness in its actor (made if absent); ``on_exit`` runs on a
        watcher thread when it ends unasked (reason "node lost" when its node died)."""
        placement = self._placement_of(name)
        began = time.monotonic()
        actor = self._actor(name, placement)
        try:
            pid = self._call(actor, "start", driver, timeout=self._start_seconds, what=f"start of {name}")
        except BackendFailed:
            self._kill(name, actor)  # an actor with no harness would hold its node's resources for nothing
            raise
        info = self._call(actor, "running") or {}
        node = info.get("node") or self._call(actor, "node")
        if info and not info.get("sandboxed"):
            _log.warning("backend.unsandboxed", agent=name, **node)
        handle = RayHandle(name, pid, actor, node)
        self._watch(handle, on_exit)
        _log.info("container.start", agent=name, pid=pid, placement=placement.describe(),
                  seconds=round(time.monotonic() - began, 2), **node)
        return handle

    def adopt(self, name: AgentName, driver: str, on_exit: ExitCallback) -> RayHandle | None:
        """At boot: the agent's actor exists and runs its harness → taken over, watched
        (nothing started); None otherwise (a harness with another driver is stopped first)."""
        actor = self._get(name)
        if actor is None:
            return None
        try:
            info = ray.get(actor.running.remote(), timeout=QUERY)
        except (GetTimeoutError, RayActorError) as exc:
            _log.warning("container.not_adopted", agent=name, reason=str(exc).splitlines()[0][:200])
            return None
        if info is not None and info["driver"] != driver:
            _log.warning("container.not_adopted", agent=name, pid=info["pid"], reason="runs otherwise",
                         differs=["driver"])
            self._call(actor, "stop", 5.0, timeout=5.0 + STOP_MARGIN)
            info = None
        if info is None:  # an actor without a harness holds its node's resources for nothing
            self._kill(name, actor)
            return None
        handle = RayHandle(name, info["pid"], actor, info["node"], adopted=True)
        self._watch(handle, on_exit)
        _log.info("container.adopted", agent=name, pid=handle.pid, **handle.node)
        return handle

    def release(self, handle: RayHandle) -> None:
        """Stop watching; the actor and its harness run on for the next daemon."""
        handle.claim()
        if self._handles.get(handle.name) is handle:
            del self._handles[handle.name]
        _log.info("container.released", agent=handle.name, pid=handle.pid, **handle.node)

    def stop(self, handle: RayHandle, timeout: float = 5.0) -> int | None:
        """Stop the harness (``timeout`` <= 0: at once), then its actor (the container:
        its resources go back to the node); the harness's exit status (None: unknown,
        e.g. its node died meanwhile)."""
        handle.claim()
        if self._handles.get(handle.name) is handle:
            del self._handles[handle.name]
        try:
            rc: int | None = ray.get(handle.actor.stop.remote(timeout), timeout=max(timeout, 0.0) + STOP_MARGIN)
        except RayActorError as exc:
            _log.warning("container.stop_lost", agent=handle.name, error=str(exc).splitlines()[0][:200])
            rc = None
        except GetTimeoutError:
            raise BackendFailed(f"the Ray actor of {handle.name} did not stop its harness in time") from None
        if handle.watcher is not None:
            handle.watcher.join(timeout=QUERY)
        self._kill(handle.name, handle.actor)
        _log.info("container.stopped", agent=handle.name, returncode=rc, **handle.node)
        return rc

    def destroy(self, name: AgentName) -> None:
        """Stop whatever runs, remove its cgroup, and kill the actor for good (no restart)."""
        handle = self._handles.pop(name, None)
        if handle is not None:
            handle.claim()  # asked for: no report
        actor = self._get(name)
        if actor is None:
            return
        try:
            ray.get(actor.destroy.remote(), timeout=STOP_MARGIN)
        except (GetTimeoutError, RayActorError) as exc:
            _log.warning("container.destroy_partial", agent=name, error=str(exc).splitlines()[0][:200])
        self._kill(name, actor)
        _log.info("container.destroyed", agent=name)

    def close(self) -> None:
        """At daemon stop, after every harness: stop watching, leave the cluster."""
        for handle in list(self._handles.values()):
            handle.claim()
        self._handles.clear()
        if self._owns_connection and ray.is_initialized():
            ray.shutdown()

    # --- observation ----------------------------------------------------------------
    def applied_placement(self, name: AgentName) -> Placement | None:
        """The placement in the agent's applied agent.json (a file read: not on the loop)."""
        try:
            return self.paths.load_applied(name).placement
        except (OSError, HiveError):  # unreadable: the start itself reports it
            return None

    def check(self, placement: Placement) -> None:
        """Refuse (BadRequest) a placement no node of the cluster can ever hold."""
        check_placement(placement, cluster_nodes())

    def node(self, name: AgentName) -> dict[str, str] | None:
        """The node the agent's harness runs on: {"node_id", "address"}; None when none runs."""
        handle = self._handles.get(name)
        return None if handle is None else dict(handle.node)

    def last_node(self, name: AgentName) -> dict[str, str] | None:
        """The node the agent ran on when it was last lost (for the crash report)."""
        node = self._lost.get(name)
        return None if node is None else dict(node)

    def nodes_in_use(self) -> dict[str, int]:
        """node id → how many agents' harnesses run there."""
        return dict(Counter(h.node["node_id"] for h in list(self._handles.values())))

    def usage(self, name: AgentName) -> dict[str, int | None] | None:
        handle = self._handles.get(name)
        if handle is None:
            return None
        try:
            usage: dict[str, int | None] | None = ray.get(handle.actor.usage.remote(), timeout=2.0)
        except (GetTimeoutError, RayActorError):
            return None
        return usage

    def account(self, name: AgentName) -> Account:
        return account_for(self.paths, name, self.options.uid_base, self.switch_uid)

    def log_path(self, name: AgentName) -> Path:
        return self.paths.harness_log(name)

    def journal(self, name: AgentName, unit: str, lines: int) -> str:
        """The last ``lines`` of the agent's harness.log (shared storage, daemon-owned)."""
        unit, lines = check_unit_and_lines(unit, lines)
        return tail_lines(self.paths.harness_log(name), lines)


def open_ray_backend(address: str, paths: StatePaths, options: NodeOptions = _DEFAULTS, *,
                     placement_of: Callable[[AgentName], Placement] | None = None,
                     link_of: Callable[[AgentName], dict[str, str] | None] | None = None) -> RayBackend:
    """Connect to the cluster at ``address`` ("auto" included; RayUnreachable: one line) and
    return the backend, which leaves the cluster at ``close``."""
    owns = connect(address)
    return RayBackend(paths, options, placement_of=placement_of, owns_connection=owns, link_of=link_of)


def _is_a_backend(b: RayBackend) -> Backend[RayHandle]:
    return b  # mypy checks that RayBackend conforms to backends/base.py's protocol
