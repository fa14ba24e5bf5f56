"""ContainerActor: one per agent. Runs its container through the backend,
serializes the verbs on it, and supervises the harness: an exit nobody asked
for is a crash, reported to the manager and followed by a restart with backoff.

The state and every decision are ``ContainerCore``'s (container_core.py);
this shell does what they call for: backend calls, the Broker's tells, hub
events, the Coordinator's report and the clock's timers (a crash's restart, an
idle agent's hibernation: issue 17, ``naps``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import pykka

import hyperhive.logs as logs
from hyperhive.actors import container_core as cc
from hyperhive.actors.bridge import Handle, answers
from hyperhive.actors.broker import Broker
from hyperhive.actors.clock import LoopClock
from hyperhive.actors.container_core import Backoff, ContainerCore, describe_exit, kick_text
from hyperhive.actors.events import ContainerKilled, ContainerState, Hub
from hyperhive.actors.naps import Naps
from hyperhive.actors.snapshots import ContainerSnapshot, State, Transient
from hyperhive.backends.base import Backend, ContainerHandle
from hyperhive.names import MANAGER, SYSTEM, AgentName

__all__ = ["Backoff", "ContainerActor", "Report", "State", "describe_exit", "kick_text"]

_log = logs.get("hyperhive.container")

# The Coordinator's ``container_changed(snapshot, urn)``, as a tell.
Report = Callable[[ContainerSnapshot, str], None]


class ContainerActor(pykka.ThreadingActor):
    def __init__(
        self, name: AgentName, backend: Backend[Any], driver: str, broker: pykka.ActorProxy[Broker],
        report: Report, clock: LoopClock, hub: Hub, state_dir: str, backoff: Backoff,
        naps: Naps | None = None, hibernate_after: float = 0.0,
    ) -> None:
        super().__init__()
        self.name = name
        self._backend = backend
        self._broker = Handle(broker)
        self._report = report
        self._clock = clock
        self._hub = hub
        self._state_dir = state_dir
        self.core = ContainerCore(name, driver, backoff, sandboxed=bool(backend.sandboxed),
                                  hibernate_after=hibernate_after)
        self._naps = naps
        self._handle: ContainerHandle | None = None
        self._released = False  # handed over to the next daemon: left running at this actor's stop
        self._me: Handle[ContainerActor] | None = None

    def on_start(self) -> None:
        self._me = Handle(self.actor_ref.proxy())
        logs.bind_thread(agent=self.name)
        if self._naps is not None:
            self._naps.register(self.name, self._me)

    def on_stop(self) -> None:
        if self._naps is not None:
            self._naps.forget(self.name)
        if not self._released:
            self._stop_harness()

    # --- verbs: each runs whole inside one message, so verbs on one agent never
    # interleave; while it runs the snapshot shows its transient kind (F16).
    @answers
    def start_agent(self, kick: str | None = None, transient: Transient = "starting",
                    adopt: bool = False) -> dict[str, Any]:
        """Start the harness if it is not running; kick the agent with ``kick``.
        ``adopt`` (at boot): a harness an earlier daemon left running is taken over, unkicked."""
        return self._verb("start", transient, kick=kick, adopt=adopt)

    @answers
    def release_agent(self) -> None:
        """At a daemon stop that keeps the agents: leave the harness running (the
        next daemon adopts it); this actor's stop no longer stops it."""
        handle, self._handle = self._handle, None
        self._released = True
        if handle is not None:
            self._backend.release(handle)

    @answers
    def stop_agent(self) -> dict[str, Any]:
        return self._verb("stop")

    @answers
    def restart_agent(self, kick: str = "restarted") -> dict[str, Any]:
        return self._verb("restart", kick=kick)

    @answers
    def rebuild_agent(self, driver: str, hibernate_after: float | None = None) -> dict[str, Any]:
        """Restart with the applied config the Coordinator has just loaded."""
        if hibernate_after is not None:
            self.core.hibernate_after = hibernate_after
        return self._verb("rebuild", driver=driver)

    # --- hibernation (issue 17) ------------------------------------------------
    def turn_seen(self, busy: bool) -> None:
        """Its socket saw a turn start, or its harness wait for work (Naps.turn)."""
        self._arm(self.core.turn(busy, time.monotonic()))

    def hibernate_if_idle(self, activity: int) -> None:
        """An idle check fired: stop the harness if nothing happened since it was armed."""
        try:
            if self.core.idle_due(activity, time.monotonic()):
                self._verb("hibernate")
        except Exception:  # noqa: BLE001 - a tell must never kill the actor
            _log.exception("container.hibernate_failed")

    def wake_agent(self) -> None:
        """A message for it (or one waiting when it went to sleep): start its harness."""
        try:
            if self.core.state == "hibernating":
                self._verb("wake")
        except Exception:  # noqa: BLE001 - a tell must never kill the actor
            _log.exception("container.wake_failed")

    def _arm(self, activity: int | None) -> None:
        if activity is not None and self.core.hibernate_after > 0 and self._me is not None:
            self._clock.call_later(self.core.hibernate_after, self._me.tell, ContainerActor.hibernate_if_idle,
                                   activity)

    def _hibernate(self) -> None:
        handle, self._handle = self._handle, None
        self.core.stopping()
        if handle is not None:
            self.core.stopped(self._backend.stop(handle, timeout=5.0))
        self.core.hibernated()
        if self._naps is not None:  # first: a message from now on wakes it…
            self._naps.asleep(self.name, True)
        me = self._me  # …and one that came before is found by the Broker after the harness's recvs go
        self._broker.tell(Broker.harness_gone, self.name, None if me is None else partial(Naps.wake, me))
        _log.info("container.hibernated", after=self.core.hibernate_after)
        self._publish()

    @answers
    def kill_agent(self, by: str = "operator") -> dict[str, Any]:
        """Stop at once (SIGKILL, no grace) and tell the manager."""
        return self._verb("kill", by=by)

    @answers
    def destroy_agent(self) -> dict[str, Any]:
        """Stop for good and remove the container itself; the agent's dirs stay
        (the Coordinator purges them when asked)."""
        return self._verb("destroy")

    def end_orphan(self) -> None:
        """At boot, when its desired state is stopped: a harness an earlier daemon
        left running anyway (it was killed during a stop) is stopped now."""
        try:
            if self._handle is not None:
                return
            handle = self._backend.adopt(self.name, self.core.driver, lambda rc, reason: None)
            if handle is not None:
                _log.warning("container.orphan_stopped", pid=handle.pid)
                self._backend.stop(handle, timeout=5.0)
            self._broker.tell(Broker.harness_gone, self.name)  # what a dead one took goes back (issue 16)
        except Exception:  # noqa: BLE001 - a tell must never kill the actor
            _log.exception("container.orphan_stop_failed")

    def set_driver(self, driver: str) -> None:
        self.core.driver = driver

    def _verb(self, verb: cc.Verb, transient: Transient | None = None, kick: str | None = None,
              by: str = "operator", driver: str | None = None, adopt: bool = False) -> dict[str, Any]:
        kind = transient or cc.TRANSIENTS[verb]
        self.core.begin(kind)
        self._publish()
        _log.info("container.verb", transient=kind)
        try:
            if driver is not None:
                self.core.driver = driver
            self._run(self.core.plan(verb, kick, by, adopt))
        finally:
            self.core.end()
            self._publish()
        _log.info("container.verb_done", transient=kind, state=self.core.state)
        return self.snapshot()

    def _run(self, steps: tuple[cc.Step, ...]) -> None:
        was_running = False
        for step in steps:
            if isinstance(step, cc.Stop):
                was_running = self._handle is not None
                self._stop_harness(grace=step.grace)
            elif isinstance(step, cc.Start):
                self._start_harness()
            elif isinstance(step, cc.Kick):
                self._kick(step.reason)
            elif isinstance(step, cc.Killed):
                killed = ContainerKilled(self.name, step.by, was_running)
                self._broker.tell(Broker.send, SYSTEM, MANAGER, cc.killed_message(killed))
                self._hub.publish(killed)
            elif isinstance(step, cc.Destroy):
                self._backend.destroy(self.name)
            elif isinstance(step, cc.Hibernate):
                self._hibernate()
            elif isinstance(step, cc.Adopt) and not self._adopt_harness():
                self._start_harness()
                if step.kick:
                    self._kick(step.kick)

    # --- supervision -----------------------------------------------------------
    def harness_exited(self, gen: int, returncode: int | None, reason: str | None = None) -> None:
        """The backend's report of an exit; ``reason`` "out of memory" after an OOM kill."""
        try:
            last_node = getattr(self._backend, "last_node", None)  # the ray backend: where it was lost
            node = last_node(self.name) if last_node is not None and reason == "node lost" else None
            crash = self.core.exited(gen, returncode, reason, time.monotonic(), node)
            if crash is None:
                return  # an exit we asked for, or an old generation
            self._broker.tell(Broker.harness_gone, self.name)  # its recvs, and what its turn took
            self._handle = None
            _log.warning("container.crash", exit=self.core.last_exit, reason=crash.event.reason,
                         restart_in=crash.delay, ran_for=round(crash.ran_for, 2))
            self._broker.tell(Broker.send, SYSTEM, MANAGER, crash.message)
            self._hub.publish(crash.event)
            self._publish()
            self._restart_later(crash.delay)
        except Exception:  # noqa: BLE001 - a tell must never kill the actor
            _log.exception("container.supervise_failed")

    def restart_after_crash(self, gen: int) -> None:
        try:
            if not self.core.restart_due(gen):
                return
            self._start_harness()
            self._kick(cc.CRASH_KICK)
        except Exception:  # noqa: BLE001
            _log.exception("container.restart_failed")
            delay = self.core.restart_failed()
            self._publish()
            self._restart_later(delay)

    def _restart_later(self, delay: float) -> None:
        if self._me is not None:
            self._clock.call_later(delay, self._me.tell, ContainerActor.restart_after_crash, self.core.generation)

    # --- internals -----------------------------------------------------------
    def _on_exit(self, gen: int) -> Callable[[int | None, str | None], None]:
        me = self._me

        def on_exit(rc: int | None, reason: str | None = None) -> None:  # on the backend's watcher thread
            if me is not None:
                me.tell(ContainerActor.harness_exited, gen, rc, reason)

        return on_exit

    def _start_harness(self) -> None:
        gen = self.core.starting()
        self._handle = self._backend.start(self.name, self.core.driver, self._on_exit(gen))
        self.core.started(time.monotonic())
        self._publish()

    def _adopt_harness(self) -> bool:
        """Take over a harness left running by an earlier daemon; False when there is none."""
        gen = self.core.starting()
        handle = self._backend.adopt(self.name, self.core.driver, self._on_exit(gen))
        if handle is None:  # what a dead one's turn took goes back before the new one recvs (issue 16)
            self._broker.tell(Broker.harness_gone, self.name)
            return False
        self._handle = handle
        self.core.started(time.monotonic())
        self._publish()
        return True

    def _stop_harness(self, grace: float = 5.0) -> None:
        handle, self._handle = self._handle, None
        self.core.stopping()
        if handle is not None:
            self.core.stopped(self._backend.stop(handle, timeout=grace))
            self._broker.tell(Broker.harness_gone, self.name)
        self._publish()

    def _kick(self, reason: str) -> None:
        # The Broker fills in what the last harness left unfinished (issue 16).
        self._broker.tell(Broker.kick, self.name, partial(kick_text, self.name, reason, self._state_dir))

    def snapshot(self) -> dict[str, Any]:
        return self.snapshot_data().to_wire()

    def snapshot_data(self) -> ContainerSnapshot:
        pid = self._handle.pid if self._handle is not None else None
        node = getattr(self._handle, "node", None)  # a RayHandle's (issue 18); other handles have none
        return self.core.snapshot(pid, time.monotonic(), time.time(), dict(node) if node else None)

    def _publish(self) -> None:
        if self._naps is not None:
            self._naps.asleep(self.name, self.core.state == "hibernating")
        data = self.snapshot_data()
        self._report(data, self.actor_urn)
        self._hub.publish(ContainerState(data))
