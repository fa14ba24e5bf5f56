"""Coordinator: the registry of ContainerActors and the containers table.

It creates agents (spawn: the name reserved here, the files and the clone of
the operator's repo made on a thread of their own, `spawn_clone`, then
registered here), routes lifecycle verbs to each agent's actor
(passing the caller's reply future along, so it never waits on them), and
keeps the latest snapshot each actor reports for `ls`. The rules (who may be
spawned, destroyed or routed to, the desired state a verb leaves, whom a boot
starts, which reports count) are ``coordinator_core``'s; this shell does the
store, the files, the sockets and the tells.
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
from hyperhive.actors import spawn_clone
from hyperhive.actors.bridge import Handle, Reply, answers, claim, fail, parks, resolve
from hyperhive.actors.broker import Broker
from hyperhive.actors.clock import LoopClock
from hyperhive.actors.container import ContainerActor
from hyperhive.actors.container_core import Backoff
from hyperhive.actors.coordinator_core import (
    BOOT_KICK,
    DESIRED,
    Registry,
    RouteVerb,
    boot_plan,
    needs_manager,
)
from hyperhive.actors.events import ContainerAdded, ContainerRemoved, Hub, TombstonePurged
from hyperhive.actors.naps import Naps
from hyperhive.actors.ports import PortAllocator
from hyperhive.actors.snapshots import ContainerSnapshot
from hyperhive.actors.spawn_clone import Spawning
from hyperhive.backends.base import Backend
from hyperhive.errors import Conflict, HiveError
from hyperhive.names import MANAGER, AgentName
from hyperhive.paths import AgentConfig, StatePaths
from hyperhive.settings import Settings
from hyperhive.store.models import Container

__all__ = ["Coordinator", "SocketBinder"]

_log = logs.get("hyperhive.coordinator")

Snapshot = dict[str, Any]  # a verb's reply: the container's snapshot, wire form
ContainerProxy = pykka.ActorProxy[ContainerActor]


class SocketBinder(Protocol):
    def open(self, name: AgentName, manager: bool) -> None: ...
    def close(self, name: AgentName) -> None: ...


class Coordinator(pykka.ThreadingActor):
    def __init__(
        self, settings: Settings, paths: StatePaths, backend: Backend[Any], broker: pykka.ActorProxy[Broker],
        clock: LoopClock, hub: Hub, sockets: SocketBinder, ports: pykka.ActorProxy[PortAllocator] | None = None,
        naps: Naps | None = None,
    ) -> None:
        super().__init__()
        self._settings = settings
        self._paths = paths
        self._backend = backend
        self._broker_proxy = broker
        self._broker = Handle(broker)
        self._clock = clock
        self._hub = hub
        self._sockets = sockets
        self._ports = None if ports is None else Handle(ports)  # F20; None in tests without one
        self._naps = naps  # hibernation (issue 17); None: no agent hibernates
        self._registry: Registry[ContainerProxy] = Registry()
        self._spawning: dict[AgentName, Spawning] = {}  # names reserved while their files are made
        self._me: Handle[Coordinator] | None = None

    def on_start(self) -> None:
        self._me = Handle(self.actor_ref.proxy())
        logs.bind_thread(actor="coordinator")

    def on_stop(self) -> None:
        for job in self._spawning.values():  # never waited for: see spawn_clone
            spawn_clone.abandon(self._paths, job)
        self._spawning.clear()
        # Reverse order of creation; each stop terminates that harness.
        for name in reversed(self._registry.names()):
            try:
                actor = self._registry.get(name)
                if actor is not None:
                    actor.actor_ref.stop(timeout=15)
            except Exception:  # noqa: BLE001
                _log.exception("coordinator.stop_failed", agent=name)

    # --- boot ---------------------------------------------------------------
    @parks
    def boot(self, reply: Reply[list[str]] | None) -> None:
        """Bring back every kept container; create the manager on first start.

        Replies once every start has finished, after their snapshots reached
        this actor, so an `ls` right after boot shows them running.
        """
        try:
            rows = list(Container.select().order_by(Container.created_at))
            if needs_manager(r.name for r in rows):  # no repo: made here, at once
                spawn_clone.make_files(self._paths, self._backend, Spawning(MANAGER))
                self._register(MANAGER)
                rows = list(Container.select().order_by(Container.created_at))
            starts: dict[str, cf.Future[Snapshot]] = {}
            for step in boot_plan(((r.name, r.desired) for r in rows), self._registry.names()):
                if step.attach:
                    self._attach(step.name)
                actor = self._registry.get(step.name)
                if actor is None:
                    continue
                # A harness an earlier daemon left running is adopted, not started (issue 16);
                # one left running that should not run (killed mid-stop) is stopped.
                if step.start:
                    starts[step.name] = Handle(actor).future(ContainerActor.start_agent, kick=BOOT_KICK, adopt=True)
                else:
                    Handle(actor).tell(ContainerActor.end_orphan)
        except Exception as exc:  # noqa: BLE001 - the daemon's start reports it
            _log.exception("coordinator.boot_failed")
            if claim(reply):
                fail(reply, exc)
            return
        _log.info("coordinator.booting", containers=len(rows), starting=list(starts))
        left = [len(starts)]
        lock = threading.Lock()
        me = self._me

        def one_done(_f: cf.Future[Snapshot]) -> None:  # on a container's thread
            with lock:
                left[0] -= 1
                last = left[0] == 0
            if last and me is not None:
                me.tell(Coordinator.boot_finished, starts, reply)

        if not starts:
            self.boot_finished(starts, reply)
        for f in starts.values():
            f.add_done_callback(one_done)

    def boot_finished(self, starts: dict[str, cf.Future[Snapshot]], reply: Reply[list[str]] | None) -> None:
        failed = {n: str(f.exception()) for n, f in starts.items() if f.exception() is not None}
        started = [n for n in starts if n not in failed]
        if failed:
            _log.error("coordinator.boot_start_failed", failed=failed)
        _log.info("coordinator.booted", started=started)
        if claim(reply):
            resolve(reply, started)

    @answers
    def release_all(self) -> list[str]:
        """At a daemon stop that keeps the agents (``--keep-agents``, a handover):
        every container leaves its harness running for the next daemon to adopt;
        this actor's stop then stops none. The names released."""
        futures = {name: Handle(actor).future(ContainerActor.release_agent)
                   for name in self._registry.names() if (actor := self._registry.get(name)) is not None}
        released: list[str] = []
        for name, f in futures.items():  # a container never waits on this actor: no deadlock
            try:
                f.result(timeout=30)
                released.append(name)
            except Exception:  # noqa: BLE001 - that one is stopped as usual
                _log.exception("coordinator.release_failed", agent=name)
        _log.info("coordinator.released", agents=released)
        return released

    # --- verbs ----------------------------------------------------------------
    @parks
    def spawn(
        self, reply: Reply[Snapshot] | None, name: str, config: AgentConfig | None = None,
        prompt: str | None = None, kick: str | None = None,
    ) -> None:
        """Create an agent and start its container; replies with its snapshot.
        The name is reserved here; its checks, dirs and workspace (a clone, which
        may take minutes) are made off this thread, then `finish_spawn` runs."""
        me = self._me
        try:
            agent = self._registry.check_spawn(name, self._spawning)
            assert me is not None  # set in on_start
        except Exception as exc:  # noqa: BLE001 - the caller hears of it; the actor lives
            if claim(reply):
                fail(reply, exc)
            return
        job = self._spawning[agent] = Spawning(agent, config, prompt, kick, reply)
        _log.info("container.spawning", agent=agent, repo=None if config is None else config.repo)
        spawn_clone.start(self._paths, self._backend, job, lambda error: me.tell(Coordinator.finish_spawn, job, error))

    def finish_spawn(self, job: Spawning, error: Exception | None) -> None:
        """A spawn's files are made (or ``error``): register and start the
        container, or tell the caller why not (a fresh agent's files are gone)."""
        if self._spawning.get(job.agent) is not job:
            return  # abandoned
        try:
            if error is not None:
                raise error
            self._register(job.agent)
            actor = self._registry.get(job.agent)
            assert actor is not None  # _register registered it
        except Exception as exc:  # noqa: BLE001 - the caller hears of it; a tell must never kill the coordinator
            if not isinstance(exc, HiveError):
                _log.exception("coordinator.spawn_failed", agent=job.agent)
            if claim(job.reply):
                fail(job.reply, exc)
            return
        finally:
            del self._spawning[job.agent]
        _log.info("container.spawn", agent=job.agent)
        Handle(actor).forward(ContainerActor.start_agent, job.reply, kick=job.kick, transient="spawning")

    @parks
    def start_agent(self, reply: Reply[Snapshot] | None, name: str) -> None:
        if (found := self._routed(reply, name, "start_agent")) is not None:
            Handle(found[1]).forward(ContainerActor.start_agent, reply, kick="started")

    @parks
    def stop_agent(self, reply: Reply[Snapshot] | None, name: str) -> None:
        if (found := self._routed(reply, name, "stop_agent")) is not None:
            Handle(found[1]).forward(ContainerActor.stop_agent, reply)

    @parks
    def restart_agent(self, reply: Reply[Snapshot] | None, name: str) -> None:
        if (found := self._routed(reply, name, "restart_agent")) is not None:
            Handle(found[1]).forward(ContainerActor.restart_agent, reply)

    @parks
    def kill_agent(self, reply: Reply[Snapshot] | None, name: str, by: str = "operator") -> None:
        if (found := self._routed(reply, name, "kill_agent")) is not None:
            Handle(found[1]).forward(ContainerActor.kill_agent, reply, by=by)

    @parks
    def rebuild_agent(self, reply: Reply[Snapshot] | None, name: str) -> None:
        """Reload the applied config (policy, driver) and restart with it."""
        drivers: list[tuple[str, float]] = []

        def prepare(agent: AgentName) -> None:
            cfg = self._paths.load_applied(agent)
            allowed = None if cfg.allowed_recipients is None else list(cfg.allowed_recipients)
            self._broker.tell(Broker.register, agent, allowed)
            drivers.append((cfg.driver or self._settings.driver, self._hibernate_after(cfg)))

        if (found := self._routed(reply, name, "rebuild_agent", prepare)) is not None:
            Handle(found[1]).forward(ContainerActor.rebuild_agent, reply, *drivers[0])

    @answers
    def has_agent(self, name: str) -> bool:
        return name in self._registry

    @parks
    def destroy_agent(self, reply: Reply[dict[str, Any]] | None, name: str, purge: bool = False,
                      force: bool = False) -> None:
        """Destroy the container; its dirs are kept (a tombstone) unless ``purge``
        (which refuses to lose unmerged work unless ``force``)."""
        try:
            agent = self._registry.check_destroy(name)
            actor = self._registry.get(agent)
            assert actor is not None
            if purge and not force:  # refused before anything is destroyed (and checked again once stopped)
                tombstones.check_work(self._paths, agent)
        except HiveError as exc:
            if claim(reply):
                fail(reply, exc)
            return
        me = self._me
        done = Handle(actor).future(ContainerActor.destroy_agent)
        if me is not None:
            done.add_done_callback(lambda f: me.tell(Coordinator.finish_destroy, agent, purge, f, reply, force))

    def finish_destroy(self, agent: AgentName, purge: bool, done: cf.Future[Snapshot],
                       reply: Reply[dict[str, Any]] | None, force: bool = False) -> None:
        try:
            exc = done.exception()
            if exc is not None:  # the container is still there, in its last state
                if claim(reply):
                    fail(reply, exc)
                return
            actor = self._registry.remove(agent)
            actor.actor_ref.stop(block=False)
            Container.delete().where(Container.name == agent).execute()
            self._broker.tell(Broker.forget, agent)
            self._sockets.close(agent)
            self._hub.publish(ContainerRemoved(agent))
            live = set(self._registry.names())
            removed = [str(p) for p in tombstones.purge(self._paths, agent, live, force=force)] if purge else []
            if removed:  # the dashboard listed its dir as a tombstone on container.removed, perhaps
                self._hub.publish(TombstonePurged(agent))
            _log.info("container.destroyed", agent=agent, purged=removed)
            if claim(reply):
                resolve(reply, {"name": agent, "state": "destroyed", "purged": removed})
        except Exception as exc:  # noqa: BLE001 - a tell must never kill the coordinator
            _log.exception("coordinator.destroy_failed", agent=agent)
            if claim(reply):
                fail(reply, exc)

    @answers
    def purge_tombstone(self, name: str, force: bool = False) -> dict[str, Any]:
        """Wipe a kept state dir; refused while a container of that name lives
        (and, unless ``force``, while its clone holds unmerged work). On this
        thread, so no spawn of the name can slip in between; refused while one runs."""
        if name in self._spawning:
            raise Conflict(f"agent {name} is being spawned")
        removed = [str(p) for p in tombstones.purge(self._paths, name, self._held(), force=force)]
        self._hub.publish(TombstonePurged(name))  # the dashboard's tombstones push (nothing else tells it)
        return {"name": name, "purged": removed}

    @answers
    def tombstones(self) -> list[dict[str, Any]]:
        live = self._held()
        return [t.to_wire() for t in tombstones.list_tombstones(self._paths, live, time.time())]

    def _routed(
        self, reply: Reply[Snapshot] | None, name: str, verb: RouteVerb,
        prepare: Callable[[AgentName], None] | None = None,
    ) -> tuple[AgentName, ContainerProxy] | None:
        """The checks and the desired state of a routed verb: the agent and its
        actor, or None when the caller has already been told why not."""
        try:
            agent = self._registry.check_known(name)
            actor = self._registry.get(agent)
            assert actor is not None
            if prepare is not None:
                prepare(agent)
            Container.update(desired=DESIRED[verb]).where(Container.name == agent).execute()
        except Exception as exc:  # noqa: BLE001 - the caller hears of it; the actor lives
            if not isinstance(exc, HiveError):
                _log.exception("coordinator.route_failed", agent=name, verb=verb)
            if claim(reply):
                fail(reply, exc)
            return None
        return agent, actor

    # --- reports ------------------------------------------------------------
    def container_changed(self, snapshot: ContainerSnapshot, urn: str | None = None) -> None:
        """A ContainerActor's new snapshot. One from an actor no longer registered
        (a destroyed agent's last words, perhaps after a new agent took its name)
        is dropped."""
        self._registry.changed(snapshot, urn)

    @answers
    def ls(self) -> list[ContainerSnapshot]:
        """Every container's latest snapshot (cheap: file observations such as
        badges are the callers' to make, off this thread)."""
        return self._registry.snapshots()

    # --- internals ------------------------------------------------------------
    def _held(self) -> set[str]:
        """Names whose dirs are no tombstone: the registered and the being spawned."""
        return {*self._registry.names(), *self._spawning}

    def _register(self, agent: AgentName) -> None:
        """A made agent's row (desired running) and its container, registered."""
        Container.insert(name=agent, desired="running", created_at=time.time()).on_conflict_replace().execute()
        self._attach(agent)

    def _attach(self, agent: AgentName) -> None:
        """Register an existing agent: broker policy, socket, actor."""
        if not (self._paths.config_dir(agent) / ".git").exists():  # made before configs were repos
            config_repo.init_repo(self._paths.config_dir(agent), agent)
        cfg = self._paths.load_applied(agent)
        allowed = None if cfg.allowed_recipients is None else list(cfg.allowed_recipients)
        self._broker.tell(Broker.register, agent, allowed)
        if self._ports is not None:  # F20: the web UI port, sticky, before the daemon relays it
            # The PortAllocator never calls back into the Coordinator: waiting here is safe.
            self._ports.future(PortAllocator.port_for, agent).result(timeout=10)
        self._sockets.open(agent, manager=(agent == MANAGER))
        ref = ContainerActor.start(
            agent, self._backend, cfg.driver or self._settings.driver, self._broker_proxy, self._reporter(),
            self._clock, self._hub, str(self._paths.state(agent)),
            Backoff(self._settings.restart_backoff_seconds, self._settings.restart_backoff_max_seconds),
            self._naps, self._hibernate_after(cfg))
        actor = ref.proxy()
        self._registry.add(agent, actor, ref.actor_urn, actor.snapshot_data().get(timeout=5))
        self._hub.publish(ContainerAdded(agent))

    def _hibernate_after(self, cfg: AgentConfig) -> float:
        """Its agent.json's, else the daemon's; 0 (never) without a Naps to wake it."""
        own = cfg.hibernate_after_seconds
        return 0.0 if self._naps is None else self._settings.hibernate_after_seconds if own is None else own

    def _reporter(self) -> Callable[[ContainerSnapshot, str], None]:
        me = self._me

        def report(snapshot: ContainerSnapshot, urn: str) -> None:  # on the container's thread
            if me is not None:
                me.tell(Coordinator.container_changed, snapshot, urn)

        return report
