"""One-way event publication from actors to whoever listens (the dashboard's
websocket fan-out, the metrics, the notifier). Listeners must not block: they
hand the event to their own thread or loop.

Each event is a frozen dataclass; ``name`` is its stable wire name (the
dashboard's patch kinds, the notifier's ``event`` field) and ``payload()`` its
JSON form (the same keys the dict events had). Listeners match on the type.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal

import hyperhive.logs as logs
from hyperhive.actors.snapshots import ContainerSnapshot

__all__ = [
    "ApprovalQueued", "ApprovalResolved", "BudgetExceeded", "BudgetRaised", "BudgetWarning", "ContainerActivity",
    "ContainerAdded", "ContainerCrash",
    "ContainerKilled", "ContainerRemoved", "ContainerState", "Event", "EventName", "GatewayUsage", "Hub",
    "Listener", "MessageSent", "MessageWoke", "ProxyRefused", "QuestionAsked", "QuestionResolved",
    "TombstonePurged", "VacuumSwept",
]

EventName = Literal[
    "message.sent",
    "message.woke",
    "container.state",
    "container.crash",
    "container.killed",
    "container.activity",
    "container.added",
    "container.removed",
    "tombstone.purged",
    "question.asked",
    "question.resolved",
    "approval.queued",
    "approval.resolved",
    "vacuum.swept",
    "proxy.refused",
    "gateway.usage",
    "budget.warning",
    "budget.exceeded",
    "budget.raised",
]


@dataclass(frozen=True, slots=True)
class Event:
    name: ClassVar[EventName]

    def payload(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class MessageSent(Event):
    """A committed message, as the wire shows it (``InboxRow.to_wire``)."""
    name: ClassVar[EventName] = "message.sent"
    row: dict[str, Any]

    def payload(self) -> dict[str, Any]:
        return dict(self.row)


@dataclass(frozen=True, slots=True)
class MessageWoke(Event):
    """A parked recv was handed a message ``seconds`` after its send queued."""
    name: ClassVar[EventName] = "message.woke"
    agent: str
    seconds: float


@dataclass(frozen=True, slots=True)
class ContainerState(Event):
    name: ClassVar[EventName] = "container.state"
    snapshot: ContainerSnapshot

    def payload(self) -> dict[str, Any]:
        return self.snapshot.to_wire()


@dataclass(frozen=True, slots=True)
class ContainerCrash(Event):
    """Also the ``ContainerCrash`` JSON the manager gets (``payload`` plus ``event``)."""
    name: ClassVar[EventName] = "container.crash"
    agent: str
    exit: str
    reason: str
    restart_in_seconds: float
    node: dict[str, str] | None = None  # the ray backend (issue 18): the node it ran on, after "node lost"

    def payload(self) -> dict[str, Any]:
        out = {"event": "ContainerCrash", **asdict(self)}
        if out["node"] is None:
            del out["node"]
        return out


@dataclass(frozen=True, slots=True)
class ContainerKilled(Event):
    """Also the ``Killed`` JSON the manager gets."""
    name: ClassVar[EventName] = "container.killed"
    agent: str
    by: str
    was_running: bool

    def payload(self) -> dict[str, Any]:
        return {"event": "Killed", **asdict(self)}


@dataclass(frozen=True, slots=True)
class ContainerActivity(Event):
    """A heartbeat changed what an agent is doing (``activity`` None: only repaint its row)."""
    name: ClassVar[EventName] = "container.activity"
    agent: str
    activity: str | None = None

    def payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.agent}
        if self.activity is not None:
            out["activity"] = self.activity
        return out


@dataclass(frozen=True, slots=True)
class ContainerAdded(Event):
    name: ClassVar[EventName] = "container.added"
    agent: str

    def payload(self) -> dict[str, Any]:
        return {"name": self.agent}


@dataclass(frozen=True, slots=True)
class ContainerRemoved(Event):
    name: ClassVar[EventName] = "container.removed"
    agent: str

    def payload(self) -> dict[str, Any]:
        return {"name": self.agent}


@dataclass(frozen=True, slots=True)
class TombstonePurged(Event):
    """An agent's kept state was removed (a purge, or a destroy's ``--purge``,
    after its ``container.removed``): its tombstone is gone."""
    name: ClassVar[EventName] = "tombstone.purged"
    agent: str

    def payload(self) -> dict[str, Any]:
        return {"name": self.agent}


@dataclass(frozen=True, slots=True)
class QuestionAsked(Event):
    """``view``: the question as the dashboard and ``hive questions`` show it."""
    name: ClassVar[EventName] = "question.asked"
    view: dict[str, Any]

    def payload(self) -> dict[str, Any]:
        return dict(self.view)


@dataclass(frozen=True, slots=True)
class QuestionResolved(Event):
    """The ``OperatorAnswered`` the asker got, and who asked."""
    name: ClassVar[EventName] = "question.resolved"
    answered: dict[str, Any]
    asker: str

    def payload(self) -> dict[str, Any]:
        return {**self.answered, "asker": self.asker}


@dataclass(frozen=True, slots=True)
class ApprovalQueued(Event):
    name: ClassVar[EventName] = "approval.queued"
    view: dict[str, Any]

    def payload(self) -> dict[str, Any]:
        return dict(self.view)


@dataclass(frozen=True, slots=True)
class ApprovalResolved(Event):
    name: ClassVar[EventName] = "approval.resolved"
    view: dict[str, Any]

    def payload(self) -> dict[str, Any]:
        return dict(self.view)


@dataclass(frozen=True, slots=True)
class VacuumSwept(Event):
    name: ClassVar[EventName] = "vacuum.swept"
    messages: int


@dataclass(frozen=True, slots=True)
class ProxyRefused(Event):
    name: ClassVar[EventName] = "proxy.refused"
    agent: str
    host: str
    port: int
    reason: str


@dataclass(frozen=True, slots=True)
class GatewayUsage(Event):
    """Token usage of one model API response through an agent's gateway."""
    name: ClassVar[EventName] = "gateway.usage"
    agent: str
    usage: dict[str, Any]

    def payload(self) -> dict[str, Any]:
        return {"agent": self.agent, **self.usage}


@dataclass(frozen=True, slots=True)
class BudgetWarning(Event):
    """An agent (``agent`` "" : the fleet) passed 80 % of its budget (issue 15)."""
    name: ClassVar[EventName] = "budget.warning"
    agent: str
    spent_usd: float
    budget_usd: float
    per: str

    def payload(self) -> dict[str, Any]:
        return {"event": "BudgetWarning", **asdict(self)}


@dataclass(frozen=True, slots=True)
class BudgetExceeded(Event):
    """An agent (or the fleet) reached its budget: it starts no turn until the operator says."""
    name: ClassVar[EventName] = "budget.exceeded"
    agent: str
    spent_usd: float
    budget_usd: float
    per: str
    question_id: int | None = None

    def payload(self) -> dict[str, Any]:
        return {"event": "BudgetExceeded", **asdict(self)}


@dataclass(frozen=True, slots=True)
class BudgetRaised(Event):
    """The operator raised an agent's (or the fleet's) budget to ``budget_usd``."""
    name: ClassVar[EventName] = "budget.raised"
    agent: str
    budget_usd: float
    per: str
    was_usd: float

    def payload(self) -> dict[str, Any]:
        return {"event": "BudgetRaised", **asdict(self)}


Listener = Callable[[Event], None]
_log = logs.get("hyperhive.events")


class Hub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []

    def subscribe(self, fn: Listener) -> Callable[[], None]:
        with self._lock:
            self._listeners = [*self._listeners, fn]

        def unsubscribe() -> None:
            with self._lock:
                self._listeners = [f for f in self._listeners if f is not fn]

        return unsubscribe

    def publish(self, event: Event) -> None:
        for fn in self._listeners:
            try:
                fn(event)
            except Exception:  # noqa: BLE001 - one bad listener never stops the rest
                _log.exception("events.listener_failed", event_name=event.name)
