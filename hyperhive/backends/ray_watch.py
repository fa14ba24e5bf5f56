"""Crash supervision for the ray backend: one watcher thread per harness.

The watcher long-polls the agent's actor (``NodeAgent.wait(pid, POLL)``: an
answer at least every ``poll`` seconds, so a dead daemon leaves at most one
such call behind in the actor). When the harness ends unasked it calls
``on_exit(rc, reason)`` once, as the local backend's watcher does. When the
actor's call fails because the actor died (Ray raises ``RayActorError``:
``ActorDiedError`` or ``ActorUnavailableError``), or a fresh actor answers
that it never ran this harness (Ray restarted it in between), it is
``on_exit(None, "node lost")`` when the actor's node is dead, else
``on_exit(None, "actor lost")``; the node it ran on is kept for the crash
report (`RayHandle.node`). A call that merely failed to arrive in time, or an
actor that answers again as the same one, is not a crash: polling goes on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import ActorDiedError, GetTimeoutError, RayActorError

import hyperhive.logs as logs
from hyperhive.backends.base import ExitCallback
from hyperhive.backends.ray_node import ENDED, RUNNING, UNKNOWN
from hyperhive.names import AgentName

__all__ = ["ACTOR_LOST", "NODE_LOST", "RayHandle", "cluster_nodes", "node_alive", "watch"]

_log = logs.get("hyperhive.backend.ray")

NODE_LOST = "node lost"
ACTOR_LOST = "actor lost"
POLL = 10.0
QUERY = 10.0
LOST_SECONDS = 30.0  # how long an unavailable actor may take to say whether it is still ours


@dataclass
class RayHandle:
    name: AgentName
    pid: int | None
    actor: Any  # ray.actor.ActorHandle of a NodeAgent
    node: dict[str, str]  # {"node_id", "address"} it runs (ran) on
    adopted: bool = False
    ended: threading.Event = field(default_factory=threading.Event)  # stopped, released or reported: once
    watcher: threading.Thread | None = None
    _claim: threading.Lock = field(default_factory=threading.Lock)

    def claim(self) -> bool:
        """True for the first to end it (a stop, a release or the watcher's report)."""
        with self._claim:
            if self.ended.is_set():
                return False
            self.ended.set()
            return True


def cluster_nodes() -> list[dict[str, Any]]:
    """``ray.nodes()``: every node Ray knows (``NodeID``, ``Alive``, ``Resources``: its totals, …)."""
    nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
    return nodes


def node_alive(node_id: str) -> bool:
    """Whether Ray counts ``node_id`` as a live node (unknown ids are dead)."""
    return any(n.get("NodeID") == node_id and n.get("Alive") for n in cluster_nodes())


def _why_lost(handle: RayHandle, lost_seconds: float) -> str | None:
    """After a failed call: NODE_LOST, ACTOR_LOST, or None when the actor is still the one that runs it."""
    deadline = time.monotonic() + lost_seconds
    while True:
        if not node_alive(handle.node["node_id"]):
            return NODE_LOST
        try:
            state, _, _ = ray.get(handle.actor.wait.remote(handle.pid, 0.0), timeout=QUERY)
        except ActorDiedError:
            return NODE_LOST if not node_alive(handle.node["node_id"]) else ACTOR_LOST
        except (RayActorError, GetTimeoutError):
            pass  # restarting, or slow: ask again
        else:
            if state == UNKNOWN:
                return NODE_LOST if not node_alive(handle.node["node_id"]) else ACTOR_LOST
            return None
        if time.monotonic() > deadline or handle.ended.wait(0.5):
            return ACTOR_LOST


def watch(handle: RayHandle, on_exit: ExitCallback, lost: Callable[[RayHandle, str], None],
          poll: float = POLL, lost_seconds: float = LOST_SECONDS) -> threading.Thread:
    """Start the handle's watcher; ``lost(handle, reason)`` runs before ``on_exit`` on a loss."""

    def report(rc: int | None, reason: str | None) -> None:
        if not handle.claim():
            return  # a stop or a release got there first
        if reason in (NODE_LOST, ACTOR_LOST):
            lost(handle, reason)
        _log.warning("container.exited", agent=handle.name, returncode=rc, reason=reason, **handle.node)
        on_exit(rc, reason)

    def loop() -> None:
        while not handle.ended.is_set():
            try:
                state, rc, reason = ray.get(handle.actor.wait.remote(handle.pid, poll), timeout=poll + QUERY)
            except GetTimeoutError:
                continue
            except RayActorError as exc:
                why = _why_lost(handle, lost_seconds)
                if why is not None:
                    _log.warning("container.actor_failed", agent=handle.name, error=str(exc).splitlines()[0][:300])
                    report(None, why)
                    return
                continue
            except Exception as exc:  # noqa: BLE001 - the cluster itself (GCS) may be away a while
                _log.warning("container.watch_failed", agent=handle.name, error=str(exc)[:300])
                handle.ended.wait(1.0)
                continue
            if state == RUNNING:
                continue
            if state == UNKNOWN:
                why = _why_lost(handle, lost_seconds)
                report(None, why or ACTOR_LOST)
                return
            if state == ENDED:
                report(rc, reason)
                return

    thread = threading.Thread(target=loop, name=f"watch-{handle.name}", daemon=True)
    handle.watcher = thread
    thread.start()
    return thread
