"""Typed references to the daemon's actors, for annotations at their call
sites: ``BrokerRef`` is ``pykka.ActorProxy[Broker]``, which ``Handle`` takes
and checks each method call against."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

import pykka

if TYPE_CHECKING:
    from hyperhive.actors.approvals import Approvals
    from hyperhive.actors.broker import Broker
    from hyperhive.actors.coordinator import Coordinator
    from hyperhive.actors.notifier import Notifier
    from hyperhive.actors.ports import PortAllocator
    from hyperhive.actors.questions import Questions
    from hyperhive.actors.vacuum import VacuumSweeper

__all__ = ["ApprovalsRef", "BrokerRef", "CoordinatorRef", "NotifierRef", "PortsRef", "QuestionsRef", "VacuumRef"]

ApprovalsRef: TypeAlias = "pykka.ActorProxy[Approvals]"
BrokerRef: TypeAlias = "pykka.ActorProxy[Broker]"
CoordinatorRef: TypeAlias = "pykka.ActorProxy[Coordinator]"
NotifierRef: TypeAlias = "pykka.ActorProxy[Notifier]"
PortsRef: TypeAlias = "pykka.ActorProxy[PortAllocator]"
QuestionsRef: TypeAlias = "pykka.ActorProxy[Questions]"
VacuumRef: TypeAlias = "pykka.ActorProxy[VacuumSweeper]"
