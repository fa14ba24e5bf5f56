"""ContainerActor: one per agent. Runs its container through the backend,
serializes the verbs on it, and supervises the harness: an exit nobody asked
for is a crash, reported to the manager and followed by a restart with backoff."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import pykka

import hyperhive.logs as logs
from hyperhive.actors.bridge import Reply, answer
from hyperhive.actors.clock import LoopClock
from hyperhive.actors.events import ContainerCrash, ContainerKilled, ContainerState, Hub
from hyperhive.actors.snapshots import ContainerSnapshot
from hyperhive.names import MANAGER, SYSTEM, AgentName

__all__ = ["Backoff", "ContainerActor", "State", "describe_exit", "kick_text"]

State = Literal["stopped", "running", "crashed"]
Transient = Literal["spawning", "starting", "stopping", "restarting", "rebuilding", "killing", "destroying"]
STABLE_AFTER = 60.0  # a harness up this long has its backoff reset

_log = logs.get("hyperhive.container")


@dataclass
class Backoff:
    """Crash-restart delays: base, doubling to cap; reset after a stable run."""

    base: float = 1.0
    cap: float = 30.0
    current: float = field(default=0.0)

    def next(self, ran_for: float) -> float:
        if ran_for >= STABLE_AFTER or self.current == 0.0:
            self.current = self.base
        else:
            self.current = min(self.current * 2, self.cap)
        return self.current


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        import signal
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


def kick_text(agent: str, reason: str, state_dir: str) -> str:
    """F6: what an agent reads after a (re)start."""
    return (
        f"[system] {agent}, your harness was {reason}. Your notes are in your state dir "
        f"({state_dir}); your conversation is intact. Carry on where you left off."
    )


class ContainerActor(pykka.ThreadingActor):
    def __init__(
        self, name: AgentName, backend: Any, driver: str, broker: Any, coordinator: Any,
        clock: LoopClock, hub: Hub, state_dir: str, backoff: Backoff,
    ) -> None:
        super().__init__()
        self.name = name
        self._backend = backend
        self._driver = driver
        self._broker = broker
        self._coordinator = coordinator
        self._clock = clock
        self._hub = hub
        self._state_dir = state_dir
        self._backoff = backoff
        self.state: State = "stopped"
        self.transient: Transient | None = None
        self._handle: Any = None
        self._gen = 0  # bumps on every start; stale exit reports are ignored
        self._started_at = 0.0
        self.restarts = 0
        self.last_exit: str | None = None
        self._me: Any = None

    def on_start(self) -> None:
        self._me = self.actor_ref.proxy()
        logs.bind_thread(agent=self.name)

    def on_stop(self) -> None:
        self._stop_harness()

    # --- verbs: each runs whole inside one message, so verbs on one agent never
    # interleave; while it runs the snapshot shows its transient kind (F16).
    def start_agent(self, kick: str | None = None, transient: Transient = "starting",
                    reply: Reply | None = None) -> None:
        """Start the harness if it is not running; kick the agent with ``kick``."""
        def run() -> None:
            if self.state != "running":
                self._start_harness()
            if kick:
                self._kick(kick)
        self._verb(transient, run, reply)

    def stop_agent(self, reply: Reply | None = None) -> None:
        self._verb("stopping", self._stop_harness, reply)

    def restart_agent(self, kick: str = "restarted", reply: Reply | None = None) -> None:
        def run() -> None:
            self._stop_harness()
            self._start_harness()
            self._kick(kick)
        self._verb("restarting", run, reply)

    def rebuild_agent(self, driver: str, reply: Reply | None = None) -> None:
        """Restart with the applied config the Coordinator has just loaded."""
        def run() -> None:
            self._driver = driver
            self._stop_harness()
            self._start_harness()
            self._kick("rebuilt with its newly applied config")
        self._verb("rebuilding", run, reply)

    def kill_agent(self, by: str = "operator", reply: Reply | None = None) -> None:
        """Stop at once (SIGKILL, no grace) and tell the manager."""
        def run() -> None:
            was_running = self._handle is not None
            self._stop_harness(grace=0.0)
            killed = ContainerKilled(self.name, by, was_running)
            self._broker.send.defer(SYSTEM, MANAGER, json.dumps(killed.payload()))
            self._hub.publish(killed)
        self._verb("killing", run, reply)

    def destroy_agent(self, reply: Reply | None = None) -> None:
        """Stop for good and remove the container itself; the agent's dirs stay
        (the Coordinator purges them when asked)."""
        def run() -> None:
            self._stop_harness(grace=5.0)
            destroy = getattr(self._backend, "destroy", None)
            if destroy is not None:  # the local backend has nothing beyond the process
                destroy(self.name)
        self._verb("destroying", run, reply)

    def _verb(self, transient: Transient, fn: Callable[[], None], reply: Reply | None) -> None:
        def run() -> dict[str, Any]:
            self.transient = transient
            self._publish()
            _log.info("container.verb", transient=transient)
            try:
                fn()
            finally:
                self.transient = None
                self._publish()
            _log.info("container.verb_done", transient=transient, state=self.state)
            return self.snapshot()
        answer(reply, run)

    def set_driver(self, driver: str) -> None:
        self._driver = driver

    # --- supervision -----------------------------------------------------------
    def harness_exited(self, gen: int, returncode: int, reason: str | None = None) -> None:
        """The backend's report of an exit; ``reason`` "out of memory" after an OOM kill."""
        try:
            if gen != self._gen or self.state != "running":
                return  # an exit we asked for, or an old generation
            ran_for = time.monotonic() - self._started_at
            self._broker.drop_system_waiters.defer(self.name)
            self.state = "crashed"
            self._handle = None
            self.last_exit = describe_exit(returncode) if reason is None else f"{reason} ({describe_exit(returncode)})"
            delay = self._backoff.next(ran_for)
            _log.warning("container.crash", exit=self.last_exit, reason=reason or "crash", restart_in=delay,
                         ran_for=round(ran_for, 2))
            crash = ContainerCrash(self.name, describe_exit(returncode), reason or "crash", delay)
            self._broker.send.defer(SYSTEM, MANAGER, json.dumps(crash.payload()))
            self._hub.publish(crash)
            self._publish()
            self._clock.call_later(delay, self._me.restart_after_crash.defer, self._gen)
        except Exception:  # noqa: BLE001 - a tell must never kill the actor
            _log.exception("container.supervise_failed")

    def restart_after_crash(self, gen: int) -> None:
        try:
            if gen != self._gen or self.state != "crashed":
                return
            self.restarts += 1
            self._start_harness()
            self._kick("restarted after a crash")
        except Exception:  # noqa: BLE001
            _log.exception("container.restart_failed")
            self.state = "crashed"
            self._publish()
            delay = self._backoff.next(0.0)
            self._clock.call_later(delay, self._me.restart_after_crash.defer, self._gen)

    # --- internals -----------------------------------------------------------
    def _start_harness(self) -> None:
        self._gen += 1
        gen = self._gen
        me = self._me

        def on_exit(rc: int, reason: str | None = None) -> None:
            try:
                me.harness_exited.defer(gen, rc, reason)
            except pykka.ActorDeadError:
                pass

        self._handle = self._backend.start(self.name, self._driver, on_exit)
        self._started_at = time.monotonic()
        self.state = "running"
        self._publish()

    def _stop_harness(self, grace: float = 5.0) -> None:
        handle, self._handle = self._handle, None
        self.state = "stopped"
        self._gen += 1
        if handle is not None:
            self.last_exit = describe_exit(self._backend.stop(handle, timeout=grace))
            self._broker.drop_system_waiters.defer(self.name)
        self._publish()

    def _kick(self, reason: str) -> None:
        self._broker.send.defer(SYSTEM, self.name, kick_text(self.name, reason, self._state_dir))

    def snapshot(self) -> dict[str, Any]:
        return self.snapshot_data().to_wire()

    def snapshot_data(self) -> ContainerSnapshot:
        return ContainerSnapshot(
            name=self.name,
            role="manager" if self.name == MANAGER else "agent",
            state=self.state,
            transient=self.transient,
            pid=self._handle.pid if self._handle is not None else None,
            driver=self._driver,
            restarts=self.restarts,
            last_exit=self.last_exit,
            sandboxed=bool(getattr(self._backend, "sandboxed", False)),
            started_at=(time.time() - (time.monotonic() - self._started_at)) if self.state == "running" else None,
        )

    def _publish(self) -> None:
        data = self.snapshot_data()
        try:
            self._coordinator.container_changed.defer(data.to_wire(), self.actor_urn)
        except pykka.ActorDeadError:
            pass
        self._hub.publish(ContainerState(data))
