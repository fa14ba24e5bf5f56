"""A placement (issue 18) checked again when it matters: when the operator
approves a queued spawn, revive or config apply (hours may have passed, the
cluster may have lost the nodes that offered the resource), and when a
tombstone is revived with a placement in its kept agent.json. Refused, nothing
is made (no agent dir, no container, no applied change) and the approval stays
pending, its manager not told; once the cluster holds it again the same
approval goes through. A backend that places nothing (local, nixos) changes
nothing.

The check is `RayBackend.check` itself: fed a ``ray.nodes()`` list the test
changes (the fast tier), or a real local Ray cluster whose workers are removed
(`ray_support.pool_cluster`, e2e). The actors are real (Broker, Coordinator,
Approvals on a real sqlite file), their containers real ``sleep`` processes."""

from __future__ import annotations

import asyncio
import functools
import json
import time
import types
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pykka
import pytest
import support
from sleep_backend import NoSockets, SleepBackend
from tornado.ioloop import IOLoop

from hyperhive import config_repo
from hyperhive.actors.approvals import Approvals
from hyperhive.actors.bridge import Handle
from hyperhive.actors.broker import Broker
from hyperhive.actors.clock import LoopClock
from hyperhive.actors.coordinator import Coordinator
from hyperhive.actors.events import Hub
from hyperhive.errors import HiveError
from hyperhive.names import MANAGER, OPERATOR, AgentName
from hyperhive.paths import CONFIG_FILE, AgentConfig, StatePaths
from hyperhive.placement import Placement
from hyperhive.settings import Settings
from hyperhive.store.models import Approval, Container, Message, open_hive_db
from hyperhive.web.operator import agents, gate
from hyperhive.web.operator.lifecycle import lifecycle_action

ray_backend = pytest.importorskip("hyperhive.backends.ray_backend")

T = TypeVar("T")

GIB = float(1 << 30)
POOL = Placement(resources=(("pool", 1.0),))
TWO_CPUS = Placement(cpus=2.0, resources=(("pool", 1.0),))
HEAD: dict[str, Any] = {"NodeID": "head", "Alive": True, "Resources": {"memory": 2 * GIB, "node:10.0.0.1": 1.0}}
WORKERS: list[dict[str, Any]] = [
    {"NodeID": f"w{i}", "Alive": True, "Resources": {"CPU": 2.0, "memory": 4 * GIB, "pool": 1.0}} for i in (1, 2)]
DEAD = [HEAD, *({**w, "Alive": False} for w in WORKERS)]  # the workers are gone: no node offers pool
SMALL = [HEAD, *({**w, "Resources": {**w["Resources"], "CPU": 1.0}} for w in WORKERS)]  # replaced by smaller ones
VANISHED = {"workers lost": (DEAD, POOL, "unknown resource pool: no node of the Ray cluster offers it"),
            "workers shrunk": (SMALL, TWO_CPUS, r"no node of the Ray cluster can ever hold cpus=2 pool=1")}
PENDING = "nothing was made and the approval stays pending: approve it again once the cluster can hold it, or deny it"


class RaySleep(SleepBackend):
    """A backend that places agents: ``check`` is `RayBackend.check` (on the nodes
    ``ray.nodes()`` gives), its containers are ``sleep`` processes."""

    kind = "ray"

    def __init__(self) -> None:
        super().__init__()
        self.check = functools.partial(ray_backend.RayBackend.check, None)


class Nodes:
    """What ``ray.nodes()`` answers RayBackend.check: ``now``, changed by the test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now: list[dict[str, Any]] = [HEAD, *WORKERS]
        monkeypatch.setattr(ray_backend, "cluster_nodes", lambda: [dict(n) for n in self.now])


class World:
    def __init__(self, tmp_path: Path, backend: SleepBackend) -> None:
        self.paths = StatePaths(tmp_path / "state")
        self.paths.root.mkdir(parents=True)
        self.db = open_hive_db(self.paths.db)
        hub = Hub()
        clock = LoopClock(IOLoop.current())
        self.backend = backend
        broker = Broker.start(self.db, clock, hub).proxy()
        self.broker = Handle(broker)
        coordinator = Coordinator.start(Settings(), self.paths, backend, broker, clock, hub, NoSockets()).proxy()
        self.coordinator: Any = coordinator
        self.approvals: Any = Approvals.start(self.paths, coordinator, broker, hub).proxy()

    def made(self) -> dict[str, Any]:
        """Everything an approval, refused or not, might make or change."""
        return {"approvals": [(a.id, a.status) for a in Approval.select().order_by(Approval.id)],
                "containers": sorted(c.name for c in Container.select()), "messages": Message.select().count(),
                "dirs": sorted(p.name for p in self.paths.agents.iterdir()) if self.paths.agents.is_dir() else [],
                "started": list(self.backend.started)}

    async def tombstone(self, name: str, placement: Placement | None) -> None:
        """An agent that ran with ``placement`` and was destroyed, its dirs kept."""
        await Handle(self.coordinator).ask(Coordinator.spawn, name, AgentConfig(placement=placement), "a prompt")
        await agents.destroy(self.coordinator, name)
        assert self.paths.load_applied(AgentName(name)).placement == placement

    def close(self) -> None:
        pykka.ActorRegistry.stop_all()
        self.db.close()


async def _world(tmp_path: Path, backend: SleepBackend) -> World:
    w = World(tmp_path, backend)
    await w.broker.ask(Broker.register, MANAGER, None)
    return w


@pytest.fixture
async def ray_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[World, Nodes]]:
    nodes = Nodes(monkeypatch)
    w = await _world(tmp_path, RaySleep())
    yield w, nodes
    w.close()


@pytest.fixture
async def local_world(tmp_path: Path) -> AsyncIterator[World]:
    w = await _world(tmp_path, SleepBackend())
    yield w
    w.close()


async def refused(work: Any, says: str) -> HiveError:
    with pytest.raises(HiveError, match=says) as err:
        await work
    assert err.value.code == "bad_request"
    return err.value


async def eventually(pred: Callable[[], T], what: str, timeout: float = 10.0) -> T:
    """``pred()`` once truthy (polled on the loop, which the actors' replies need); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (value := pred()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)
    return value


def pending(world: World) -> list[int]:
    return [a.id for a in Approval.select().where(Approval.status == "pending").order_by(Approval.id)]


# --- an approved spawn ---------------------------------------------------------------

@pytest.mark.parametrize("how", list(VANISHED))
async def test_an_approved_spawn_whose_resource_vanished_is_refused_and_stays_pending(
        ray_world: tuple[World, Nodes], how: str) -> None:
    world, nodes = ray_world
    now, placement, says = VANISHED[how]
    aid = (await gate.request_spawn(world.approvals, MANAGER, "fresh", backend=world.backend,
                                    placement=placement))["approval_id"]  # the cluster held it then
    nodes.now = now
    before = world.made()
    err = await refused(gate.approve(world.approvals, aid, backend=world.backend),
                        rf"^approval #{aid} \(spawn of fresh\): placement {placement.describe()}: {says}")
    assert err.message.endswith(PENDING)
    assert world.made() == before and "fresh" not in before["dirs"] + before["containers"] + before["started"]
    assert pending(world) == [aid]  # not consumed: m1nd heard nothing (no message)
    # Asked again while it still cannot be placed: the same refusal, still nothing.
    await refused(gate.approve(world.approvals, str(aid), backend=world.backend), says)
    assert world.made() == before
    # The nodes are back: the very approval goes through, with the placement shown.
    nodes.now = [HEAD, *WORKERS]
    out = await gate.approve(world.approvals, aid, backend=world.backend)
    assert out["approval"]["status"] == "approved" and world.backend.started == ["fresh"]
    assert world.paths.load_applied(AgentName("fresh")).placement == placement


async def test_a_refused_approval_may_still_be_denied_and_a_decided_one_is_refused_as_before(
        ray_world: tuple[World, Nodes]) -> None:
    world, nodes = ray_world
    aid = (await gate.request_spawn(world.approvals, MANAGER, "fresh", backend=world.backend,
                                    placement=POOL))["approval_id"]
    nodes.now = DEAD
    await refused(gate.approve(world.approvals, aid, backend=world.backend), "unknown resource pool")
    out = await gate.deny(world.approvals, aid, "the pool is gone")
    assert (out["approval"]["status"], out["approval"]["reason"]) == ("denied", "the pool is gone")
    told = await eventually(lambda: [json.loads(m.body) for m in Message.select().where(Message.recipient == MANAGER)],
                            "the outcome in m1nd's inbox")
    assert [(m["id"], m["outcome"]) for m in told] == [(aid, "denied")]  # one outcome, the operator's
    for gone, code in ((aid, "conflict"), (999, "unknown_id")):  # before any cluster is asked
        with pytest.raises(HiveError) as err:
            await gate.approve(world.approvals, gone, backend=world.backend)
        assert err.value.code == code
    with pytest.raises(HiveError) as err:
        await gate.approve(world.approvals, "1.5", backend=world.backend)
    assert err.value.code == "bad_request" and "approval id" in err.value.message


async def test_a_spawn_with_no_placement_is_approved_whatever_the_cluster(ray_world: tuple[World, Nodes]) -> None:
    world, nodes = ray_world
    aid = (await gate.request_spawn(world.approvals, MANAGER, "plain", backend=world.backend))["approval_id"]
    nodes.now = DEAD  # nothing to place on the workers
    assert (await gate.approve(world.approvals, aid, backend=world.backend))["approval"]["status"] == "approved"
    assert world.backend.started == ["plain"]


# --- an approved config apply -------------------------------------------------------

async def test_an_approved_apply_whose_resource_vanished_is_refused_and_applies_nothing(
        ray_world: tuple[World, Nodes]) -> None:
    world, nodes = ray_world
    finn = AgentName("finn")
    await Handle(world.coordinator).ask(Coordinator.spawn, finn, None, "a prompt")
    repo, applied = world.paths.config_dir(finn), world.paths.applied(finn)
    placed = config_repo.commit_change(repo, {CONFIG_FILE: json.dumps({"placement": {"resources": {"pool": 1}}})},
                                       "onto the pool", OPERATOR)
    aid = (await gate.request_apply_commit(world.approvals, MANAGER, "finn", placed, backend=world.backend))[
        "approval_id"]
    nodes.now = DEAD
    before, files = world.made(), config_repo.applied_files(applied)
    err = await refused(gate.approve(world.approvals, aid, backend=world.backend),
                        rf"^approval #{aid} \(apply of {placed[:12]} to finn\): placement pool=1: unknown resource")
    assert err.message.endswith(PENDING)
    assert world.made() == before and before["started"] == ["finn"]  # not rebuilt
    assert config_repo.applied_files(applied) == files and world.paths.load_applied(finn).placement is None
    assert pending(world) == [aid]
    nodes.now = [HEAD, *WORKERS]
    assert (await gate.approve(world.approvals, aid, backend=world.backend))["approval"]["status"] == "approved"
    assert world.paths.load_applied(finn).placement == POOL and world.backend.started == ["finn", "finn"]


async def test_an_apply_with_no_placement_is_approved_while_the_pool_is_gone(ray_world: tuple[World, Nodes]) -> None:
    world, nodes = ray_world
    finn = AgentName("finn")
    await Handle(world.coordinator).ask(Coordinator.spawn, finn, None, "a prompt")
    out = await gate.propose_config(world.approvals, MANAGER, "finn", "a new prompt", "be brief", None,
                                    backend=world.backend)
    nodes.now = DEAD
    done = await gate.approve(world.approvals, out["approval_id"], backend=world.backend)
    assert done["approval"]["status"] == "approved" and world.backend.started == ["finn", "finn"]


# --- a revive -----------------------------------------------------------------------

async def test_a_revive_whose_kept_placement_no_node_holds_is_refused(ray_world: tuple[World, Nodes]) -> None:
    world, nodes = ray_world
    await world.tombstone("finn", POOL)
    nodes.now = DEAD
    before = world.made()
    await refused(agents.revive(world.approvals, "finn", backend=world.backend),
                  r"^finn's kept agent.json: placement pool=1: unknown resource pool: no node")
    assert world.made() == before and before["approvals"] == []  # nothing queued
    # Queued while the pool was there, approved after it went: refused, the tombstone kept as it was.
    nodes.now = [HEAD, *WORKERS]
    aid = (await agents.revive(world.approvals, "finn", backend=world.backend))["approval_id"]
    nodes.now = DEAD
    before = world.made()
    err = await refused(gate.approve(world.approvals, aid, backend=world.backend),
                        rf"^approval #{aid} \(revive of finn\): its kept agent.json: placement pool=1: unknown")
    assert err.message.endswith(PENDING)
    assert world.made() == before and before["containers"] == [] and before["started"] == ["finn"]
    assert pending(world) == [aid] and (await agents.tombstones(world.coordinator))["tombstones"]
    nodes.now = [HEAD, *WORKERS]
    assert (await gate.approve(world.approvals, aid, backend=world.backend))["approval"]["status"] == "approved"
    assert world.made()["containers"] == ["finn"] and world.backend.started == ["finn", "finn"]
    assert world.paths.load_applied(AgentName("finn")).placement == POOL


async def test_a_revive_is_checked_against_its_kept_config_as_it_is_at_approval(
        ray_world: tuple[World, Nodes]) -> None:
    """The revive runs with the agent.json kept on disk (applied), read at approval."""
    world, nodes = ray_world
    await world.tombstone("finn", None)
    aid = (await agents.revive(world.approvals, "finn", backend=world.backend))["approval_id"]
    finn = AgentName("finn")
    nodes.now = SMALL  # one CPU a worker now
    config_repo.write_applied({CONFIG_FILE: AgentConfig(placement=TWO_CPUS).to_json()}, "by hand",
                              world.paths.applied(finn))
    await refused(gate.approve(world.approvals, aid, backend=world.backend),
                  r"\(revive of finn\): its kept agent.json: placement cpus=2 pool=1: no node .*can ever hold")
    assert world.made()["containers"] == [] and pending(world) == [aid]
    config_repo.write_applied({CONFIG_FILE: AgentConfig(placement=POOL).to_json()}, "by hand",
                              world.paths.applied(finn))
    assert (await gate.approve(world.approvals, aid, backend=world.backend))["approval"]["status"] == "approved"


# --- a backend that places nothing ----------------------------------------------------

async def test_a_backend_that_places_nothing_approves_and_revives_as_before(local_world: World) -> None:
    world = local_world
    assert getattr(world.backend, "check", None) is None
    # A config with a placement (queued on another hive, say) is not checked, and runs here.
    aid = await Handle(world.approvals).ask(Approvals.request_spawn, MANAGER, "fresh", AgentConfig(placement=POOL))
    assert (await gate.approve(world.approvals, aid, backend=world.backend))["approval"]["status"] == "approved"
    await world.tombstone("finn", POOL)
    rid = (await agents.revive(world.approvals, "finn", backend=world.backend))["approval_id"]
    assert (await gate.approve(world.approvals, rid, backend=world.backend))["approval"]["status"] == "approved"
    await agents.destroy(world.coordinator, "finn")
    rid = (await agents.revive(world.approvals, "finn"))["approval_id"]  # no backend given: as every caller did
    assert (await gate.approve(world.approvals, rid))["approval"]["status"] == "approved"
    assert world.made()["containers"] == ["finn", "fresh"] and world.backend.started == ["fresh", "finn", "finn",
                                                                                           "finn"]


# --- on a real Ray cluster ------------------------------------------------------------

def _pool_nodes(ray: Any) -> int:
    return sum(1 for n in ray.nodes() if n.get("Alive") and "pool" in (n.get("Resources") or {}))


@pytest.mark.e2e
@pytest.mark.ray
async def test_on_a_real_cluster_approvals_wait_for_the_pool_to_come_back(tmp_path: Path) -> None:
    support.require_e2e("a Ray cluster (ray_support.pool_cluster)")
    ray = pytest.importorskip("ray")
    from ray_support import pool_cluster

    from hyperhive.backends.ray_connect import NAMESPACE

    with pool_cluster() as (cluster, workers):
        ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False)
        world = await _world(tmp_path, RaySleep())
        try:
            aid = (await gate.request_spawn(world.approvals, MANAGER, "fresh", backend=world.backend,
                                            placement=POOL))["approval_id"]
            await world.tombstone("finn", POOL)
            rid = (await agents.revive(world.approvals, "finn", backend=world.backend))["approval_id"]
            for worker in workers:
                cluster.remove_node(worker)
            support.wait_for(lambda: _pool_nodes(ray) == 0, timeout=60, what="the workers gone from ray.nodes()")
            before = world.made()
            for approval, what in ((aid, "spawn of fresh"), (rid, "revive of finn")):
                await refused(gate.approve(world.approvals, approval, backend=world.backend),
                              rf"^approval #{approval} \({what}\).*placement pool=1: unknown resource pool")
            await refused(agents.revive(world.approvals, "finn", backend=world.backend), "unknown resource pool")
            assert world.made() == before and before["containers"] == [] and pending(world) == [aid, rid]
            cluster.add_node(num_cpus=1, resources={"pool": 1}, object_store_memory=80 << 20)
            cluster.wait_for_nodes()
            support.wait_for(lambda: _pool_nodes(ray) == 1, timeout=60, what="a pool worker back in ray.nodes()")
            for approval in (aid, rid):
                out = await gate.approve(world.approvals, approval, backend=world.backend)
                assert out["approval"]["status"] == "approved"
            assert world.made()["containers"] == ["finn", "fresh"]
        finally:
            world.close()


# --- a start, restart or rebuild -----------------------------------------------------

async def test_a_start_restart_or_rebuild_checks_the_applied_placement_against_the_cluster_now(
        ray_world: tuple[World, Nodes]) -> None:
    world, nodes = ray_world
    world.backend.applied_placement = functools.partial(  # type: ignore[attr-defined]
        ray_backend.RayBackend.applied_placement, types.SimpleNamespace(paths=world.paths))
    await Handle(world.coordinator).ask(Coordinator.spawn, AgentName("finn"), AgentConfig(placement=POOL), "a prompt")
    await lifecycle_action(world.coordinator, "stop", "finn", OPERATOR, backend=world.backend)
    nodes.now = DEAD
    for verb in ("start", "restart", "rebuild"):
        await refused(lifecycle_action(world.coordinator, verb, "finn", OPERATOR, backend=world.backend),
                      rf"^finn's agent.json \({verb}: nothing was started\): placement pool=1: unknown resource pool")
    assert world.backend.started == ["finn"]  # the spawn's start alone
    await lifecycle_action(world.coordinator, "kill", "finn", OPERATOR, backend=world.backend)  # no placement asked
    nodes.now = [HEAD, *WORKERS]
    out = await lifecycle_action(world.coordinator, "start", "finn", OPERATOR, backend=world.backend)
    assert out["container"]["state"] == "running" and world.backend.started == ["finn", "finn"]
    # An agent with no placement starts whatever the cluster, and a backend with no check is not asked.
    await Handle(world.coordinator).ask(Coordinator.spawn, AgentName("plain"), None, "a prompt")
    await lifecycle_action(world.coordinator, "stop", "plain", OPERATOR, backend=world.backend)
    nodes.now = DEAD
    out = await lifecycle_action(world.coordinator, "start", "plain", OPERATOR, backend=world.backend)
    assert out["container"]["state"] == "running"


async def test_a_backend_that_places_nothing_starts_as_before(local_world: World) -> None:
    world = local_world
    await Handle(world.coordinator).ask(Coordinator.spawn, AgentName("finn"), AgentConfig(placement=POOL), "a prompt")
    await lifecycle_action(world.coordinator, "stop", "finn", OPERATOR, backend=world.backend)
    out = await lifecycle_action(world.coordinator, "start", "finn", OPERATOR, backend=world.backend)
    assert out["container"]["state"] == "running" and world.backend.started == ["finn", "finn"]
