"""The Approvals actor in process: the real Broker, Coordinator and
ContainerActors on a real sqlite file and state dir, the test's IOLoop as the
clock, and a backend whose containers are real ``sleep`` processes
(tests/sleep_backend.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pykka
import pytest
from sleep_backend import NoSockets, SleepBackend
from support import async_wait_for
from tornado.ioloop import IOLoop

from hyperhive import config_repo
from hyperhive.actors.approvals import Approvals
from hyperhive.actors.bridge import Handle
from hyperhive.actors.broker import Broker
from hyperhive.actors.clock import LoopClock
from hyperhive.actors.coordinator import Coordinator
from hyperhive.actors.events import Event, Hub
from hyperhive.errors import BadRequest, Conflict, UnknownAgent, UnknownId
from hyperhive.names import MANAGER, AgentName
from hyperhive.paths import AgentConfig, StatePaths
from hyperhive.settings import Settings
from hyperhive.store.models import Approval, Container, Message, open_hive_db


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.paths = StatePaths(tmp_path / "state")
        self.paths.root.mkdir(parents=True, exist_ok=True)
        self.db = open_hive_db(self.paths.db)
        self.hub = Hub()
        self.events: list[Event] = []
        self.hub.subscribe(self.events.append)
        clock = LoopClock(IOLoop.current())
        self.backend = SleepBackend()
        self.broker_proxy = Broker.start(self.db, clock, self.hub).proxy()
        self.broker = Handle(self.broker_proxy)
        self.coordinator_proxy = Coordinator.start(Settings(), self.paths, self.backend, self.broker_proxy, clock,
                                                   self.hub, NoSockets()).proxy()
        self.coordinator = Handle(self.coordinator_proxy)
        self.approvals = Handle(Approvals.start(self.paths, self.coordinator_proxy, self.broker_proxy,
                                                self.hub).proxy())

    def resolved(self) -> list[dict[str, Any]]:
        """The ApprovalResolved messages in the manager's inbox."""
        rows = Message.select().where((Message.recipient == MANAGER) & (Message.sender == "system"))
        return [b for b in (json.loads(m.body) for m in rows.order_by(Message.id)) if b["event"] == "ApprovalResolved"]

    def event_names(self, prefix: str) -> list[str]:
        return [e.name for e in self.events if e.name.startswith(prefix)]

    def close(self) -> None:
        pykka.ActorRegistry.stop_all()
        self.db.close()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = World(tmp_path)
    await w.broker.ask(Broker.register, MANAGER, None)  # the manager's inbox, as boot leaves it
    yield w
    w.close()


async def test_approving_a_spawn_creates_and_starts_the_agent_and_tells_the_manager(world: World) -> None:
    aid = await world.approvals.ask(Approvals.request_spawn, MANAGER, "alice", AgentConfig(driver="claude"), "be nice")
    listing = await world.approvals.ask(Approvals.list)
    assert [(a["id"], a["agent"], a["status"], a["prompt"]) for a in listing["pending"]] == [
        (aid, "alice", "pending", "be nice")]
    view = await world.approvals.ask(Approvals.approve, aid)
    assert (view["id"], view["status"], view["reason"]) == (aid, "approved", None)
    assert Container.get_or_none(Container.name == "alice") is not None and world.backend.started == ["alice"]
    assert world.paths.load_applied(AgentName("alice")).driver == "claude"
    await async_wait_for(world.resolved, what="ApprovalResolved in m1nd's inbox")
    assert world.resolved() == [{"event": "ApprovalResolved", "id": aid, "kind": "spawn", "agent": "alice",
                                 "commit": None, "outcome": "approved", "reason": None}]
    assert world.event_names("approval.") == ["approval.queued", "approval.resolved"]
    decided = (await world.approvals.ask(Approvals.list))["decided"]
    assert [(a["id"], a["status"]) for a in decided] == [(aid, "approved")]
    with pytest.raises(Conflict, match="already approved"):
        await world.approvals.ask(Approvals.approve, aid)


async def test_deny_decides_once_and_tells_the_manager(world: World) -> None:
    aid = await world.approvals.ask(Approvals.request_spawn, "operator", "bob")
    view = await world.approvals.ask(Approvals.deny, aid, "not today")
    assert (view["status"], view["reason"]) == ("denied", "not today")
    with pytest.raises(Conflict, match="already denied"):
        await world.approvals.ask(Approvals.deny, aid, "again")
    with pytest.raises(Conflict, match="already denied"):
        await world.approvals.ask(Approvals.approve, aid)
    with pytest.raises(UnknownId):
        await world.approvals.ask(Approvals.deny, aid + 100)
    await async_wait_for(world.resolved, what="ApprovalResolved")
    assert [(m["outcome"], m["reason"]) for m in world.resolved()] == [("denied", "not today")]
    assert world.backend.started == [] and Container.get_or_none(Container.name == "bob") is None
    # An empty reason is no reason.
    other = await world.approvals.ask(Approvals.request_spawn, "operator", "carol")
    assert (await world.approvals.ask(Approvals.deny, other, ""))["reason"] is None


async def test_the_first_decision_wins_while_the_coordinator_works(world: World) -> None:
    aid = await world.approvals.ask(Approvals.request_spawn, MANAGER, "dora")
    # Told back to back: the deny and the listing reach Approvals before the
    # Coordinator's answer can (its done-callback is told after them).
    approving = world.approvals.future(Approvals.approve, aid)
    denying = world.approvals.future(Approvals.deny, aid, "too late")
    listing = world.approvals.future(Approvals.list)
    with pytest.raises(Conflict, match="being applied"):
        await asyncio.wrap_future(denying)
    assert [a["status"] for a in (await asyncio.wrap_future(listing))["pending"]] == ["applying"]
    assert (await asyncio.wrap_future(approving))["status"] == "approved"
    await async_wait_for(world.resolved, what="ApprovalResolved")
    assert [m["outcome"] for m in world.resolved()] == ["approved"]


async def test_a_spawn_the_coordinator_refuses_fails_and_says_why(world: World) -> None:
    aid = await world.approvals.ask(Approvals.request_spawn, MANAGER, "erin")
    await world.coordinator.ask(Coordinator.spawn, "erin")  # created meanwhile, another way
    with pytest.raises(Conflict, match="already exists"):
        await world.approvals.ask(Approvals.approve, aid)
    row = Approval.get_by_id(aid)
    assert row.status == "failed" and "already exists" in (row.reason or "")
    await async_wait_for(world.resolved, what="ApprovalResolved")
    assert [(m["outcome"], m["id"]) for m in world.resolved()] == [("failed", aid)]
    assert world.event_names("approval.") == ["approval.queued", "approval.resolved"]


async def test_a_config_change_is_applied_as_shown_and_rebuilds(world: World) -> None:
    await world.coordinator.ask(Coordinator.spawn, "finn", AgentConfig(), "old prompt")
    out = await world.approvals.ask(Approvals.propose_config, MANAGER, "finn", "sharper", "new prompt")
    aid, commit = out["approval_id"], out["commit"]
    pending = (await world.approvals.ask(Approvals.list))["pending"][0]
    assert (pending["kind"], pending["commit"]) == ("apply_commit", commit) and "new prompt" in pending["diff_html"]
    # The repo moves on after the request: what the approval showed is what is applied.
    config_repo.commit_change(world.paths.config_dir(AgentName("finn")), {"prompt.md": "later"}, "later", "m1nd")
    view = await world.approvals.ask(Approvals.approve, aid)
    assert view["status"] == "approved"
    assert (world.paths.applied(AgentName("finn")) / "prompt.md").read_text() == "new prompt"
    await async_wait_for(lambda: world.backend.started.count("finn") == 2, what="the rebuild restarted finn")
    await async_wait_for(world.resolved, what="ApprovalResolved")
    assert [(m["kind"], m["commit"], m["outcome"]) for m in world.resolved()] == [("apply_commit", commit, "approved")]


async def test_an_approval_without_kept_files_fails_asking_for_a_new_request(world: World) -> None:
    await world.coordinator.ask(Coordinator.spawn, "gus")
    old = Approval.create(kind="apply_commit", agent="gus", requested_by=MANAGER, requested_at=1.0,
                          commit="ab" * 20)  # queued by a hyperhive that kept no files
    with pytest.raises(BadRequest, match="request it again"):
        await world.approvals.ask(Approvals.approve, old.id)
    assert Approval.get_by_id(old.id).status == "failed"
    await async_wait_for(world.resolved, what="ApprovalResolved")
    assert world.resolved()[0]["outcome"] == "failed" and "older hyperhive" in world.resolved()[0]["reason"]
    assert world.backend.started == ["gus"]  # nothing was rebuilt


async def test_requests_the_actor_refuses(world: World) -> None:
    a = world.approvals
    first = await a.ask(Approvals.request_spawn, MANAGER, "hana")
    with pytest.raises(Conflict, match=f"#{first}"):
        await a.ask(Approvals.request_spawn, "operator", "hana")
    with pytest.raises(UnknownAgent):
        await a.ask(Approvals.request_revive, "operator", "ivan")  # no kept state
    with pytest.raises(UnknownAgent):
        await a.ask(Approvals.propose_config, MANAGER, "ivan", "msg", "p")
    with pytest.raises(UnknownAgent):
        await a.ask(Approvals.request_apply_commit, MANAGER, "ivan", "HEAD")
    with pytest.raises(UnknownId):
        await a.ask(Approvals.approve, 999)
    assert world.resolved() == [] and world.backend.started == []


async def test_revive_brings_back_a_tombstone_with_its_kept_config(world: World) -> None:
    world.paths.create_agent(AgentName("jo"), AgentConfig(driver="claude"))  # kept dirs, no container
    with pytest.raises(Conflict, match="kept state"):
        await world.approvals.ask(Approvals.request_spawn, MANAGER, "jo")
    aid = await world.approvals.ask(Approvals.request_revive, "operator", "jo")
    pending = (await world.approvals.ask(Approvals.list))["pending"][0]
    assert (pending["id"], pending["reason"], pending["config"]) == (aid, "revive", {"driver": "claude"})
    assert (await world.approvals.ask(Approvals.approve, aid))["status"] == "approved"
    assert world.backend.started == ["jo"]
