"""Hibernation's switchboard (issue 17): which agents hibernate, and the turns
the agents' sockets see, handed to their ContainerActors.

An agent with no turn for its ``hibernate_after`` seconds has its harness
stopped (ContainerActor, ``container_core``); it shows ``hibernating`` and its
desired state stays running. What starts it again, as socket activation does:
- a message for it: this listens on the hub for ``MessageSent`` (every send,
  a kick included) and tells a hibernating recipient's actor to wake;
- a message that was already waiting when it went to sleep (the harness had
  taken it but not begun its turn): the actor asks the Broker after the stop;
- any operator verb (start, restart…), which starts a harness anyway.

Idle is counted from the harness's system recv (it waits for work: after its
start, after each turn); a turn's slot makes it busy. Thread-safe: the hub
calls ``heard`` on actor threads, ``turn`` comes from the loop thread (the
agent's ``recv`` and ``turn_slot``), and each actor registers itself from its
own.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from hyperhive.actors.events import Event, MessageSent

if TYPE_CHECKING:
    from hyperhive.actors.bridge import Handle
    from hyperhive.actors.container import ContainerActor

__all__ = ["Naps"]


class Naps:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._actors: dict[str, Handle[ContainerActor]] = {}
        self._asleep: dict[str, int] = {}  # name → which nap (each one counted: what a nap's reads may keep)
        self._naps = 0

    def register(self, name: str, actor: Handle[ContainerActor]) -> None:
        with self._lock:
            self._actors[name] = actor

    def forget(self, name: str) -> None:
        with self._lock:
            self._actors.pop(name, None)
            self._asleep.pop(name, None)

    def asleep(self, name: str, yes: bool) -> None:
        """The actor's state, as it publishes it: hibernating or not."""
        with self._lock:
            if not yes:
                self._asleep.pop(name, None)
            elif name not in self._asleep:
                self._naps += 1
                self._asleep[name] = self._naps

    def nap(self, name: str) -> int | None:
        """Which nap ``name`` is in (None: awake); what is read of it while it lasts stays true."""
        with self._lock:
            return self._asleep.get(name)

    def wake_named(self, name: str) -> None:
        with self._lock:
            actor = self._actors.get(name) if name in self._asleep else None
        if actor is not None:
            self.wake(actor)

    def turn(self, name: str, busy: bool) -> None:
        """The agent's socket saw its turn start (``busy``) or end."""
        from hyperhive.actors.container import ContainerActor

        with self._lock:
            actor = self._actors.get(name)
        if actor is not None:
            actor.tell(ContainerActor.turn_seen, busy)

    def heard(self, event: Event) -> None:
        """A hub listener: a message for a hibernating agent wakes it."""
        if not isinstance(event, MessageSent):
            return
        to: Any = event.row.get("to")
        with self._lock:
            actor = self._actors.get(to) if to in self._asleep else None
        if actor is not None:
            self.wake(actor)

    @staticmethod
    def wake(actor: Handle[ContainerActor]) -> None:
        from hyperhive.actors.container import ContainerActor

        actor.tell(ContainerActor.wake_agent)
