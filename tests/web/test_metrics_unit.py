"""F45 ``Metrics``: which counter (and label) each hub event moves, and the
gauges a scrape reads from the real Broker, Questions and Approvals on a temp
sqlite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pykka
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sleep_backend import NoSockets, SleepBackend
from tornado.ioloop import IOLoop

from hyperhive.actors.approvals import Approvals
from hyperhive.actors.bridge import Handle
from hyperhive.actors.broker import Broker
from hyperhive.actors.clock import LoopClock
from hyperhive.actors.coordinator import Coordinator
from hyperhive.actors.events import (
    ApprovalQueued,
    ApprovalResolved,
    ContainerActivity,
    ContainerAdded,
    ContainerCrash,
    ContainerKilled,
    ContainerRemoved,
    ContainerState,
    Event,
    GatewayUsage,
    Hub,
    MessageSent,
    MessageWoke,
    ProxyRefused,
    QuestionAsked,
    QuestionResolved,
    VacuumSwept,
)
from hyperhive.actors.questions import Questions
from hyperhive.actors.snapshots import ContainerSnapshot
from hyperhive.paths import StatePaths
from hyperhive.settings import Settings
from hyperhive.store.models import open_hive_db
from hyperhive.web.dashboard.metrics import Metrics

Key = tuple[str, tuple[tuple[str, str], ...]]


def samples(m: Metrics) -> dict[Key, float]:
    """Every sample of the counters and the histogram (``_created`` stamps left out)."""
    out: dict[Key, float] = {}
    for fam in m.registry.collect():
        for s in fam.samples:
            if not s.name.endswith("_created"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def moved(m: Metrics, event: Event) -> dict[Key, float]:
    before = samples(m)
    m.on_event(event)
    after = samples(m)
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


def sent(to: str, delivered: float | None = None) -> MessageSent:
    return MessageSent({"id": 1, "from": "alice", "to": to, "body": "x", "sent_at": 1.0, "delivered_at": delivered})


def snap(name: str) -> ContainerSnapshot:
    return ContainerSnapshot(name=name, role="agent", state="running")


# 3 ms falls in every bucket from 5 ms up.
WOKE_BUCKETS: dict[Key, float] = {("hyperhive_wake_latency_seconds_bucket", (("le", le),)): 1
                                  for le in ("0.005", "0.01", "0.025", "0.05", "0.1", "0.5", "+Inf")}


@pytest.mark.parametrize(("event", "moves"), [
    (sent("bob"), {("hyperhive_messages_sent_total", ()): 1}),
    (sent("operator"), {("hyperhive_messages_sent_total", ()): 1, ("hyperhive_messages_to_operator_total", ()): 1}),
    (sent("bob", delivered=2.0), {("hyperhive_messages_sent_total", ()): 1,
                                  ("hyperhive_messages_woke_parked_recv_total", ()): 1}),
    (MessageWoke("bob", 0.003), {("hyperhive_wake_latency_seconds_count", ()): 1,
                                 ("hyperhive_wake_latency_seconds_sum", ()): 0.003, **WOKE_BUCKETS}),
    (VacuumSwept(12), {("hyperhive_vacuum_removed_total", (("what", "messages"),)): 12}),
    (VacuumSwept(0), {}),
    (ProxyRefused("alice", "evil.example", 443, "not allowed"),
     {("hyperhive_proxy_refused_total", (("agent", "alice"),)): 1}),
    (GatewayUsage("alice", {"status": 200, "input_tokens": 5}),
     {("hyperhive_gateway_requests_total", (("agent", "alice"), ("status", "200"))): 1,
      ("hyperhive_tokens_total", (("agent", "alice"), ("kind", "input"), ("model", "unknown"))): 5}),
    (ContainerCrash("alice", "rc=1", "crashed", 1.0), {("hyperhive_container_crashes_total", ()): 1}),
    (ContainerKilled("alice", "operator", True), {("hyperhive_container_kills_total", ()): 1}),
    (QuestionAsked({"id": 1}), {("hyperhive_questions_asked_total", ()): 1}),
    (QuestionResolved({"id": 1, "how": "expired"}, "m1nd"),
     {("hyperhive_questions_resolved_total", (("how", "expired"),)): 1}),
    (ApprovalQueued({"id": 1, "kind": "apply_commit"}),
     {("hyperhive_approvals_queued_total", (("kind", "apply_commit"),)): 1}),
    (ApprovalResolved({"id": 1, "status": "denied"}),
     {("hyperhive_approvals_resolved_total", (("outcome", "denied"),)): 1}),
    (ContainerState(snap("alice")), {}),
    (ContainerActivity("alice", "thinking"), {}),
    (ContainerAdded("alice"), {}),
    (ContainerRemoved("alice"), {}),
])
def test_each_event_moves_its_counter(event: Event, moves: dict[Key, float]) -> None:
    got = moved(Metrics(), event)
    assert got.keys() == moves.keys()
    for k, v in moves.items():
        assert got[k] == pytest.approx(v)


def test_two_daemons_never_share_counters() -> None:
    a, b = Metrics(), Metrics()
    a.on_event(QuestionAsked({"id": 1}))
    assert samples(b)[("hyperhive_questions_asked_total", ())] == 0


# --- scrape: the gauges, from the real actors ------------------------------------------------------
class World:
    def __init__(self, tmp_path: Path) -> None:
        paths = StatePaths(tmp_path / "state")
        paths.root.mkdir(parents=True)
        self.db = open_hive_db(paths.db)
        clock = LoopClock(IOLoop.current())
        hub = Hub()
        self.broker = Broker.start(self.db, clock, hub).proxy()
        self.questions = Questions.start(self.broker, clock, hub).proxy()
        coordinator = Coordinator.start(Settings(), paths, SleepBackend(), self.broker, clock, hub, NoSockets()).proxy()
        self.approvals = Approvals.start(paths, coordinator, self.broker, hub).proxy()

    def close(self) -> None:
        pykka.ActorRegistry.stop_all()
        self.db.close()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = World(tmp_path)
    yield w
    w.close()


def text_samples(text: bytes) -> dict[str, float]:
    return {s.name + repr(sorted(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text.decode()) for s in fam.samples}


async def test_scrape_reads_the_gauges_from_the_actors(world: World) -> None:
    broker, questions, approvals = Handle(world.broker), Handle(world.questions), Handle(world.approvals)
    for agent in ("alice", "bob"):
        await broker.ask(Broker.register, agent, None)
    await broker.ask(Broker.send, "alice", "bob", "one")
    await broker.ask(Broker.send, "bob", "alice", "two")
    await broker.ask(Broker.send, "alice", "bob", "three")
    await questions.ask(Questions.ask, "alice", "ok?", [])
    await approvals.ask(Approvals.request_spawn, "operator", "carol")
    await approvals.ask(Approvals.request_spawn, "operator", "dave")
    parked = broker.within(60).future(Broker.recv, "carol-not-registered", 60)  # a parked recv

    async def containers() -> list[dict[str, Any]]:
        return [{"name": "alice", "state": "running", "usage": {"memory_bytes": 10, "pids": 2}},
                {"name": "bob", "state": "stopped"}, {"name": "x", "state": "stopped", "transient": "starting"}]

    m = text_samples(await Metrics().scrape(containers, world.broker, world.questions, world.approvals))
    assert m["hyperhive_undelivered_messages[]"] == 3
    assert m["hyperhive_parked_recvs[('kind', 'tool')]"] == 1 and m["hyperhive_parked_recvs[('kind', 'system')]"] == 0
    assert m["hyperhive_pending_questions[]"] == 1 and m["hyperhive_pending_approvals[]"] == 2
    assert m["hyperhive_containers[('state', 'running')]"] == 1
    assert m["hyperhive_containers[('state', 'stopped')]"] == 1
    assert m["hyperhive_containers[('state', 'starting')]"] == 1
    assert m["hyperhive_agent_memory_bytes[('agent', 'alice'), ('kind', 'current')]"] == 10
    assert m["hyperhive_agent_pids[('agent', 'alice')]"] == 2
    parked.cancel()
