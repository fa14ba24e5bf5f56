"""hyperhive.actors.events: the Hub's fan-out and the events' wire forms."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from structlog.testing import capture_logs

from hyperhive.actors.events import (
    ApprovalQueued,
    ContainerActivity,
    ContainerAdded,
    ContainerCrash,
    ContainerKilled,
    Event,
    GatewayUsage,
    Hub,
    MessageSent,
    MessageWoke,
    QuestionResolved,
    VacuumSwept,
)


def test_every_listener_gets_each_event_in_order() -> None:
    hub = Hub()
    a: list[Event] = []
    b: list[Event] = []
    hub.subscribe(a.append)
    hub.subscribe(b.append)
    events = [ContainerAdded("alice"), VacuumSwept(3)]
    for e in events:
        hub.publish(e)
    assert a == b == events


def test_a_failing_listener_does_not_stop_the_others() -> None:
    hub = Hub()
    got: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("listener bug")

    hub.subscribe(got.append)
    hub.subscribe(broken)
    hub.subscribe(got.append)
    with capture_logs() as logs:
        hub.publish(VacuumSwept(1))
    assert got == [VacuumSwept(1), VacuumSwept(1)]
    assert [(e["event"], e["event_name"]) for e in logs] == [("events.listener_failed", "vacuum.swept")]


def test_unsubscribe_stops_the_events() -> None:
    hub = Hub()
    got: list[Event] = []
    off = hub.subscribe(got.append)
    hub.publish(VacuumSwept(1))
    off()
    off()  # twice is harmless
    hub.publish(VacuumSwept(2))
    assert got == [VacuumSwept(1)]


def test_subscribing_and_unsubscribing_during_a_publish() -> None:
    """A publish goes to the listeners there were when it began: one added
    meanwhile gets the next event, one removed meanwhile still gets this one."""
    hub = Hub()
    seen: dict[str, list[int]] = {"first": [], "late": [], "removed": []}
    offs: dict[str, Callable[[], None]] = {}

    def listener(name: str) -> Callable[[Event], None]:
        def on(event: Event) -> None:
            assert isinstance(event, VacuumSwept)
            seen[name].append(event.messages)
            if name == "first" and event.messages == 1:
                offs["late"] = hub.subscribe(listener("late"))
                offs["removed"]()
                offs["first"]()  # itself, too
        return on

    offs["first"] = hub.subscribe(listener("first"))
    offs["removed"] = hub.subscribe(listener("removed"))
    hub.publish(VacuumSwept(1))
    hub.publish(VacuumSwept(2))
    assert seen == {"first": [1], "late": [2], "removed": [1]}


@pytest.mark.parametrize(("event", "name", "payload"), [
    (MessageSent({"id": 1, "to": "operator"}), "message.sent", {"id": 1, "to": "operator"}),
    (MessageWoke("alice", 0.5), "message.woke", {"agent": "alice", "seconds": 0.5}),
    (ContainerCrash("alice", "rc=1", "crashed", 2.0), "container.crash",
     {"event": "ContainerCrash", "agent": "alice", "exit": "rc=1", "reason": "crashed", "restart_in_seconds": 2.0}),
    (ContainerKilled("bob", "operator", True), "container.killed",
     {"event": "Killed", "agent": "bob", "by": "operator", "was_running": True}),
    (ContainerActivity("bob"), "container.activity", {"name": "bob"}),
    (ContainerActivity("bob", "thinking"), "container.activity", {"name": "bob", "activity": "thinking"}),
    (QuestionResolved({"id": 4, "how": "expired"}, "m1nd"), "question.resolved",
     {"id": 4, "how": "expired", "asker": "m1nd"}),
    (ApprovalQueued({"id": 2, "kind": "spawn"}), "approval.queued", {"id": 2, "kind": "spawn"}),
    (GatewayUsage("alice", {"status": 200, "input_tokens": 3}), "gateway.usage",
     {"agent": "alice", "status": 200, "input_tokens": 3}),
])
def test_wire_names_and_payloads(event: Event, name: str, payload: dict[str, object]) -> None:
    assert (event.name, event.payload()) == (name, payload)
