"""Coordinator: the registry of ContainerActors and the containers table.

It creates agents (spawn), routes lifecycle verbs to each agent's actor
(passing the caller's reply future along, so it never waits on them), and
keeps the latest snapshot each actor reports for `ls`.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import pykka

import hyperhive.logs as logs
from hyperhive import config_repo, tombstones
from hyperhive.actors.bridge import Reply, answer, claim, fail, resolve
from hyperhive.actors.clock import LoopClock
from hyperhive.actors.container import Backoff, ContainerActor
from hyperhive.actors.events import ContainerAdded, ContainerRemoved, Hub
from hyperhive.errors import Conflict, HiveError, UnknownAgent
from hyperhive.names import MANAGER, AgentName, validate_name, validate_spawnable
from hyperhive.paths import AgentConfig, StatePaths
from hyperhive.settings import Settings
from hyperhive.store.models import Container

__all__ = ["Coordinator", "SocketBinder"]

_log = logs.get("hyperhive.coordinator")


class SocketBinder(Protocol):
    def open(self, name: AgentName, manager: bool) -> None: ...
    def close(self, name: AgentName) -> None: ...


class Coordinator(pykka.ThreadingActor):
    def __init__(
        self, settings: Settings, paths: StatePaths, backend: Any, broker: Any,
        clock: LoopClock, hub: Hub, sockets: SocketBinder, ports: Any = None,
    ) -> None:
        super().__init__()
        self._settings = settings
        self._paths = paths
        self._backend = backend
        self._broker = broker
        self._clock = clock
        self._hub = hub
        self._sockets = sockets
        self._ports = ports
        self._actors: dict[str, Any] = {}
        self._snapshots: dict[str, dict[str, Any]] = {}
        self._me: Any = None

    def on_start(self) -> None:
        self._me = self.actor_ref.proxy()
        logs.bind_thread(actor="coordinator")

    def on_stop(self) -> None:
        # Reverse order of creation; each stop terminates that harness.
        for name in reversed(list(self._actors)):
            try:
                self._actors[name].actor_ref.stop(timeout=15)
            except Exception:  # noqa: BLE001
                _log.exception("coordinator.stop_failed", agent=name)

    # --- boot ---------------------------------------------------------------
    def boot(self, reply: Reply | None = None) -> None:
        """Bring back every kept container; create the manager on first start.

        Replies once every start has finished, after their snapshots reached
        this actor, so an `ls` right after boot shows them running.
        """
        try:
            rows = list(Container.select().order_by(Container.created_at))
            if not any(r.name == MANAGER for r in rows):
                self._create(MANAGER)
                rows = list(Container.select().order_by(Container.created_at))
            starts: dict[str, cf.Future[Any]] = {}
            for row in rows:
                name = validate_name(row.name)
                if name not in self._actors:
                    self._attach(name)
                if row.desired == "running":
                    starts[name] = cf.Future()
                    self._actors[name].start_agent.defer(kick="restarted with the host daemon", reply=starts[name])
        except Exception as exc:  # noqa: BLE001 - the daemon's start reports it
            _log.exception("coordinator.boot_failed")
            if claim(reply):
                fail(reply, exc)
            return
        _log.info("coordinator.booting", containers=len(rows), starting=list(starts))
        left = [len(starts)]
        lock = threading.Lock()

        def one_done(_f: cf.Future[Any]) -> None:  # on a container's thread
            with lock:
                left[0] -= 1
                last = left[0] == 0
            if last:
                self._me.boot_finished.defer(starts, reply)

        if not starts:
            self.boot_finished(starts, reply)
        for f in starts.values():
            f.add_done_callback(one_done)

    def boot_finished(self, starts: dict[str, cf.Future[Any]], reply: Reply | None) -> None:
        failed = {n: str(f.exception()) for n, f in starts.items() if f.exception() is not None}
        started = [n for n in starts if n not in failed]
        if failed:
            _log.error("coordinator.boot_start_failed", failed=failed)
        _log.info("coordinator.booted", started=started)
        if claim(reply):
            resolve(reply, started)

    # --- verbs ----------------------------------------------------------------
    def spawn(
        self, name: str, config: AgentConfig | None = None, prompt: str | None = None,
        kick: str | None = None, reply: Reply | None = None,
    ) -> None:
        """Create an agent and start its container; replies with its snapshot."""
        try:
            agent = validate_spawnable(name)
            if agent in self._actors:
                raise Conflict(f"agent {agent} already exists")
            self._create(agent, config, prompt)
        except HiveError as exc:
            if claim(reply):
                fail(reply, exc)
            return
        except Exception as exc:  # noqa: BLE001
            _log.exception("coordinator.spawn_failed", agent=name)
            if claim(reply):
                fail(reply, exc)
            return
        _log.info("container.spawn", agent=agent)
        self._actors[agent].start_agent.defer(kick=kick, transient="spawning", reply=reply)

    def start_agent(self, name: str, reply: Reply | None = None) -> None:
        self._route(name, reply, "running", "start_agent", kick="started")

    def stop_agent(self, name: str, reply: Reply | None = None) -> None:
        self._route(name, reply, "stopped", "stop_agent")

    def restart_agent(self, name: str, reply: Reply | None = None) -> None:
        self._route(name, reply, "running", "restart_agent")

    def kill_agent(self, name: str, by: str = "operator", reply: Reply | None = None) -> None:
        self._route(name, reply, "stopped", "kill_agent", by=by)

    def rebuild_agent(self, name: str, reply: Reply | None = None) -> None:
        """Reload the applied config (policy, driver) and restart with it."""
        def prepare(agent: AgentName) -> dict[str, Any]:
            cfg = self._paths.load_applied(agent)
            allowed = None if cfg.allowed_recipients is None else list(cfg.allowed_recipients)
            self._broker.register.defer(agent, allowed)
            return {"driver": cfg.driver or self._settings.driver}
        self._route(name, reply, "running", "rebuild_agent", prepare=prepare)

    def has_agent(self, name: str, reply: Reply | None = None) -> None:
        answer(reply, lambda: name in self._actors)

    def destroy_agent(self, name: str, purge: bool = False, reply: Reply | None = None) -> None:
        """Destroy the container; its dirs are kept (a tombstone) unless ``purge``."""
        try:
            agent = validate_name(name)
            if agent == MANAGER:
                raise Conflict("the manager cannot be destroyed; stop or restart it instead")
            actor = self._actors.get(agent)
            if actor is None:
                raise UnknownAgent(f"no agent named {agent}")
        except HiveError as exc:
            if claim(reply):
                fail(reply, exc)
            return
        done: cf.Future[Any] = cf.Future()
        done.add_done_callback(lambda f: self._me.finish_destroy.defer(agent, purge, f, reply))
        actor.destroy_agent.defer(reply=done)

    def finish_destroy(self, agent: AgentName, purge: bool, done: cf.Future[Any], reply: Reply | None) -> None:
        try:
            exc = done.exception()
            if exc is not None:  # the container is still there, in its last state
                if claim(reply):
                    fail(reply, exc)
                return
            actor = self._actors.pop(agent)
            actor.actor_ref.stop(block=False)
            self._snapshots.pop(agent, None)
            Container.delete().where(Container.name == agent).execute()
            self._broker.forget.defer(agent)
            self._sockets.close(agent)
            self._hub.publish(ContainerRemoved(agent))
            removed = [str(p) for p in tombstones.purge(self._paths, agent, set(self._actors))] if purge else []
            _log.info("container.destroyed", agent=agent, purged=removed)
            if claim(reply):
                resolve(reply, {"name": agent, "state": "destroyed", "purged": removed})
        except Exception as exc:  # noqa: BLE001 - a tell must never kill the coordinator
            _log.exception("coordinator.destroy_failed", agent=agent)
            if claim(reply):
                fail(reply, exc)

    def purge_tombstone(self, name: str, reply: Reply | None = None) -> None:
        """Wipe a kept state dir; refused while a container of that name lives.
        On this thread, so no spawn of the name can slip in between."""
        answer(reply, lambda: {"name": name, "purged": [
            str(p) for p in tombstones.purge(self._paths, name, set(self._actors))]})

    def tombstones(self, reply: Reply | None = None) -> None:
        answer(reply, lambda: [t.to_wire() for t in tombstones.list_tombstones(
            self._paths, set(self._actors), time.time())])

    def _route(
        self, name: str, reply: Reply | None, desired: str, verb: str,
        prepare: Callable[[AgentName], dict[str, Any]] | None = None, **kw: Any,
    ) -> None:
        try:
            agent = validate_name(name)
            actor = self._actors.get(agent)
            if actor is None:
                raise UnknownAgent(f"no agent named {agent}")
            if prepare is not None:
                kw.update(prepare(agent))
            Container.update(desired=desired).where(Container.name == agent).execute()
        except HiveError as exc:
            if claim(reply):
                fail(reply, exc)
            return
        except Exception as exc:  # noqa: BLE001 - the caller hears of it; the actor lives
            _log.exception("coordinator.route_failed", agent=name, verb=verb)
            if claim(reply):
                fail(reply, exc)
            return
        getattr(actor, verb).defer(reply=reply, **kw)

    # --- reports ------------------------------------------------------------
    def container_changed(self, snapshot: dict[str, Any], urn: str | None = None) -> None:
        """A ContainerActor's new snapshot. One from an actor no longer registered
        (a destroyed agent's last words, perhaps after a new agent took its name)
        is dropped."""
        actor = self._actors.get(snapshot["name"])
        if actor is not None and (urn is None or actor.actor_ref.actor_urn == urn):
            self._snapshots[snapshot["name"]] = snapshot

    def ls(self, reply: Reply | None = None) -> None:
        """Every container's latest snapshot (cheap: file observations such as
        badges are the callers' to make, off this thread)."""
        answer(reply, lambda: [self._snapshots[n] for n in self._actors if n in self._snapshots])

    # --- internals ------------------------------------------------------------
    def _create(self, agent: AgentName, config: AgentConfig | None = None, prompt: str | None = None) -> None:
        fresh = not self._paths.applied(agent).exists()
        self._paths.create_agent(agent, config or AgentConfig())
        head = config_repo.init_repo(self._paths.config_dir(agent), agent, prompt)
        if fresh:  # a revived agent keeps the config it last ran with
            config_repo.materialize(self._paths.config_dir(agent), head, self._paths.applied(agent))
        Container.insert(name=agent, desired="running", created_at=time.time()).on_conflict_replace().execute()
        self._attach(agent)

    def _attach(self, agent: AgentName) -> None:
        """Register an existing agent: broker policy, socket, actor."""
        if not (self._paths.config_dir(agent) / ".git").exists():  # made before configs were repos
            config_repo.init_repo(self._paths.config_dir(agent), agent)
        cfg = self._paths.load_applied(agent)
        allowed = None if cfg.allowed_recipients is None else list(cfg.allowed_recipients)
        self._broker.register.defer(agent, allowed)
        if self._ports is not None:  # F20: the web UI port, sticky, before the daemon relays it
            port: cf.Future[int] = cf.Future()
            self._ports.port_for.defer(agent, reply=port)
            port.result(timeout=10)  # the PortAllocator never calls back into the Coordinator
        self._sockets.open(agent, manager=(agent == MANAGER))
        actor = ContainerActor.start(
            agent, self._backend, cfg.driver or self._settings.driver, self._broker, self._me,
            self._clock, self._hub, str(self._paths.state(agent)),
            Backoff(self._settings.restart_backoff_seconds, self._settings.restart_backoff_max_seconds),
        ).proxy()
        self._actors[agent] = actor
        self._snapshots[agent] = actor.snapshot().get(timeout=5)
        self._hub.publish(ContainerAdded(agent))
