"""The Broker's decisions, with no threads, sockets or database in sight:
who may send to whom, how long a recv waits, and which parked recv a new
message wakes, and what an idempotency key may be."""

from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass, field

from hyperhive.actors.bridge import Reply, claim
from hyperhive.errors import BadRequest, NotAllowed, UnknownAgent
from hyperhive.names import OPERATOR, SYSTEM
from hyperhive.wire import InboxRow

__all__ = ["MAX_KEY_LEN", "BrokerCore", "Waiter", "check_idempotency_key", "clamp_wait"]

RECV_BATCH = 100  # messages one recv takes at most
RECV_BYTES = 1 << 20  # and about this many bytes of them (always at least one message)
MAX_KEY_LEN = 128  # an idempotency key: 1..128 printable ASCII characters (space to ~)


def check_idempotency_key(key: object) -> str | None:
    """A send's ``idempotency_key`` (None: the send has none), or BadRequest.

    The key names the send, per sender: a retry with the same key is the same
    send, whatever its recipient and body (as NATS JetStream's ``Nats-Msg-Id``).
    """
    if key is None:
        return None
    if not isinstance(key, str):
        raise BadRequest(f"idempotency_key must be a string, got {type(key).__name__}")
    if not 1 <= len(key) <= MAX_KEY_LEN or not (key.isascii() and key.isprintable()):  # ASCII printable: " ".."~"
        shown = key[:40] + ("..." if len(key) > 40 else "")
        raise BadRequest(f"idempotency_key must be 1 to {MAX_KEY_LEN} printable ASCII characters "
                         f"(space to ~), got {len(key)} character(s): {shown!r}")
    return key


def clamp_wait(wait_seconds: float | None, default: float, cap: float) -> float:
    """F2: None means the default; anything above the cap is the cap."""
    if wait_seconds is None:
        return min(default, cap)
    if math.isnan(wait_seconds) or wait_seconds < 0:
        raise BadRequest(f"wait_seconds must be >= 0, got {wait_seconds}")
    return min(float(wait_seconds), cap)


@dataclass
class Waiter:
    id: int
    agent: str
    system: bool
    reply: Reply[list[InboxRow]]
    deadline: float
    # True once parked again after it was claimed (its messages were refused by
    # the store): its future is already running, ``take`` must not claim it again.
    claimed: bool = False

    def take(self) -> bool:
        """Claim the waiter's reply (True: it is ours to resolve)."""
        if self.claimed:
            return not self.reply.done()
        return claim(self.reply)


@dataclass
class BrokerCore:
    recv_default: float = 30.0
    recv_cap: float = 180.0
    # agent -> allowed recipients (None: anyone). Its keys are the known agents.
    policies: dict[str, frozenset[str] | None] = field(default_factory=dict)
    _tool: dict[str, deque[Waiter]] = field(default_factory=dict)
    _system: dict[str, deque[Waiter]] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # --- who may send -----------------------------------------------------
    def register(self, agent: str, allowed: frozenset[str] | None) -> None:
        self.policies[agent] = allowed

    def forget(self, agent: str) -> None:
        self.policies.pop(agent, None)

    def check_send(self, sender: str, to: str) -> None:
        """Raise if ``sender`` may not message ``to`` (F4)."""
        if to == SYSTEM:
            raise NotAllowed("nobody can message 'system'")
        if to == sender:
            raise NotAllowed(f"{sender} cannot message itself")
        if to != OPERATOR and to not in self.policies:
            raise UnknownAgent(f"no agent named {to!r}")
        if sender in (OPERATOR, SYSTEM):
            return
        allowed = self.policies.get(sender)
        if allowed is not None and to not in allowed:
            names = ", ".join(sorted(allowed)) or "nobody"
            raise NotAllowed(
                f"{sender} may not message {to}: {sender}'s config sets "
                f"allowed_recipients = [{names}]"
            )

    # --- parked recvs -----------------------------------------------------
    def park(self, agent: str, system: bool, reply: Reply[list[InboxRow]], deadline: float) -> Waiter:
        w = Waiter(next(self._ids), agent, system, reply, deadline)
        (self._system if system else self._tool).setdefault(agent, deque()).append(w)
        return w

    def take_waiter(self, agent: str) -> Waiter | None:
        """The parked recv a message for ``agent`` goes to, already claimed.

        A tool-level recv (the model asked) comes before the harness's own
        turn-loop recv; within each, first parked first served. Waiters whose
        caller gave up are dropped on the way.
        """
        for table in (self._tool, self._system):
            q = table.get(agent)
            while q:
                w = q.popleft()
                if w.take():
                    if not q:
                        del table[agent]
                    return w
            table.pop(agent, None)
        return None

    def repark(self, w: Waiter) -> None:
        """Put back a waiter taken for messages that were then not stored: first
        in its queue again, as if it had never been taken."""
        w.claimed = True
        (self._system if w.system else self._tool).setdefault(w.agent, deque()).appendleft(w)

    def expire(self, waiter_id: int, agent: str) -> Waiter | None:
        """Remove and return the waiter if it is still parked (its deadline passed)."""
        for table in (self._tool, self._system):
            q = table.get(agent)
            if not q:
                continue
            for w in q:
                if w.id == waiter_id:
                    q.remove(w)
                    if not q:
                        del table[agent]
                    return w
        return None

    def drop_system(self, agent: str) -> list[Waiter]:
        """Remove the harness's own parked recvs for ``agent`` (its harness is gone)."""
        return list(self._system.pop(agent, ()))

    def drain(self) -> list[Waiter]:
        out = [w for table in (self._tool, self._system) for q in table.values() for w in q]
        self._tool.clear()
        self._system.clear()
        return out

    def parked(self) -> dict[str, dict[str, int]]:
        """Per agent, how many recvs are parked: {"tool": n, "system": n}."""
        out: dict[str, dict[str, int]] = {}
        for kind, table in (("tool", self._tool), ("system", self._system)):
            for agent, q in table.items():
                live = sum(1 for w in q if not w.reply.done())
                if live:
                    out.setdefault(agent, {"tool": 0, "system": 0})[kind] = live
        return out
