"""The Coordinator's registry rules, with no actor, database or file in
sight: which names may be spawned, destroyed or routed to, the desired state
each verb leaves behind, which containers a boot brings back, and the mirror
of each container's latest snapshot (a report from an actor no longer
registered under the name is dropped)."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

from hyperhive.actors.snapshots import ContainerSnapshot
from hyperhive.errors import Conflict, UnknownAgent
from hyperhive.names import MANAGER, AgentName, validate_name, validate_spawnable

__all__ = ["BOOT_KICK", "DESIRED", "BootStep", "Desired", "Registry", "RouteVerb", "boot_plan", "config_is_fresh",
           "needs_manager"]

Desired = Literal["running", "stopped"]
RouteVerb = Literal["start_agent", "stop_agent", "restart_agent", "kill_agent", "rebuild_agent"]
# What each verb leaves in ``containers.desired`` (boot starts only "running" ones).
DESIRED: dict[RouteVerb, Desired] = {
    "start_agent": "running", "stop_agent": "stopped", "restart_agent": "running",
    "kill_agent": "stopped", "rebuild_agent": "running",
}
BOOT_KICK = "restarted with the host daemon"

T = TypeVar("T")


@dataclass(frozen=True)
class BootStep:
    name: AgentName
    attach: bool  # kept but not registered yet
    start: bool  # its desired state is running


def boot_plan(rows: Iterable[tuple[str, str]], known: Iterable[str]) -> list[BootStep]:
    """From the kept ``(name, desired)`` rows, in creation order: whom to
    register and whom to start. A name no longer valid raises (the boot fails)."""
    have = set(known)
    steps = []
    for raw, desired in rows:
        name = validate_name(raw)
        steps.append(BootStep(name, name not in have, desired == "running"))
        have.add(name)
    return steps


def needs_manager(names: Iterable[str]) -> bool:
    """First start (or a lost row): the manager is created before anything boots."""
    return MANAGER not in set(names)


def config_is_fresh(applied_exists: bool) -> bool:
    """A new agent gets its config materialized; a revived one (its applied
    tree kept in the tombstone) keeps the config it last ran with."""
    return not applied_exists


@dataclass
class _Entry(Generic[T]):
    actor: T
    urn: str
    snapshot: ContainerSnapshot | None = None


@dataclass
class Registry(Generic[T]):
    """The registered containers (``T``: what the actor shell keeps per agent,
    its actor's proxy), in registration order, with their latest snapshots."""

    _entries: dict[AgentName, _Entry[T]] = field(default_factory=dict)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self) -> list[AgentName]:
        return list(self._entries)

    def get(self, name: AgentName) -> T | None:
        entry = self._entries.get(name)
        return None if entry is None else entry.actor

    def add(self, name: AgentName, actor: T, urn: str, snapshot: ContainerSnapshot | None = None) -> None:
        self._entries[name] = _Entry(actor, urn, snapshot)

    def remove(self, name: AgentName) -> T:
        return self._entries.pop(name).actor

    # --- preconditions: each returns the checked name or raises -------------
    def check_spawn(self, name: str, spawning: Collection[str] = ()) -> AgentName:
        """A new agent: not registered, nor being spawned (its files being made)."""
        agent = validate_spawnable(name)
        if agent in self._entries:
            raise Conflict(f"agent {agent} already exists")
        if agent in spawning:
            raise Conflict(f"agent {agent} is being spawned")
        return agent

    def check_known(self, name: str) -> AgentName:
        """A verb routed to a live container."""
        agent = validate_name(name)
        if agent not in self._entries:
            raise UnknownAgent(f"no agent named {agent}")
        return agent

    def check_destroy(self, name: str) -> AgentName:
        agent = validate_name(name)
        if agent == MANAGER:
            raise Conflict("the manager cannot be destroyed; stop or restart it instead")
        if agent not in self._entries:
            raise UnknownAgent(f"no agent named {agent}")
        return agent

    # --- the snapshot mirror ------------------------------------------------
    def changed(self, snapshot: ContainerSnapshot, urn: str | None = None) -> bool:
        """A container's new snapshot; False (dropped) when it comes from an
        actor no longer registered under that name (a destroyed agent's last
        words, perhaps after a new agent took its name)."""
        entry = self._entries.get(AgentName(snapshot.name))
        if entry is None or (urn is not None and entry.urn != urn):
            return False
        entry.snapshot = snapshot
        return True

    def snapshots(self) -> list[ContainerSnapshot]:
        """Every registered container's latest snapshot, in registration order."""
        return [e.snapshot for e in self._entries.values() if e.snapshot is not None]
