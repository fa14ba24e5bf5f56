"""A placement (issue 18) on every path past ``hive spawn``: the spawn request
(the manager's tool and socket, ``hive request-spawn``, the dashboard's form),
its approval, and a config proposed or queued for apply. Bad placements are
refused at request time and nothing is queued, committed or created.

The cluster is `RayBackend.check` itself, fed a fixed ``ray.nodes()`` list (a
head with no agent capacity, two workers offering ``pool: 1``, a dead node with
a GPU pool): no cluster runs. The actors are real (Broker, Coordinator,
Approvals on a real sqlite file), their containers real ``sleep`` processes."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pykka
import pytest
from sleep_backend import NoSockets, SleepBackend
from tornado.ioloop import IOLoop

from hyperhive import config_repo
from hyperhive.actors.approvals import Approvals
from hyperhive.actors.bridge import Handle
from hyperhive.actors.broker import Broker
from hyperhive.actors.clock import LoopClock
from hyperhive.actors.coordinator import Coordinator
from hyperhive.actors.events import Hub
from hyperhive.errors import BadRequest, HiveError
from hyperhive.names import MANAGER, OPERATOR, AgentName
from hyperhive.paths import CONFIG_FILE, StatePaths
from hyperhive.placement import Placement
from hyperhive.settings import Settings
from hyperhive.store.models import Approval, Container, open_hive_db
from hyperhive.web.operator import gate
from hyperhive.web.operator.placement import check_placement_on, form_placement, wire_placement
from hyperhive.wire_requests import RequestSpawn, build

GIB = float(1 << 30)
NODES = [
    {"NodeID": "head", "Alive": True, "Resources": {"memory": 2 * GIB, "object_store_memory": GIB,
                                                    "node:10.0.0.1": 1.0, "node:__internal_head__": 1.0}},
    {"NodeID": "w1", "Alive": True, "Resources": {"CPU": 2.0, "memory": 4 * GIB, "pool": 1.0, "node:10.0.0.2": 1.0}},
    {"NodeID": "w2", "Alive": True, "Resources": {"CPU": 2.0, "memory": 4 * GIB, "pool": 1.0, "node:10.0.0.3": 1.0}},
    {"NodeID": "gone", "Alive": False, "Resources": {"CPU": 64.0, "gpu_pool": 8.0}},
]


class Cluster:
    """A ray backend's ``check``: the real one, on NODES."""

    kind = "ray"

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        ray_backend = pytest.importorskip("hyperhive.backends.ray_backend")
        monkeypatch.setattr(ray_backend, "cluster_nodes", lambda: NODES)
        self.check = functools.partial(ray_backend.RayBackend.check, None)


class Local:
    kind = "local"


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Cluster:
    return Cluster(monkeypatch)


# --- the pure checks, as tables ---------------------------------------------------

WIRE_BAD: list[tuple[str, float | None, int | None, dict[str, Any] | None, str]] = [
    ("negative cpus", -1, None, None, "above 0"),
    ("zero cpus", 0, None, None, "above 0"),
    ("NaN cpus", math.nan, None, None, "above 0"),
    ("infinite cpus", math.inf, None, None, "above 0"),
    ("a fraction above 1", 1.5, None, None, "whole number"),
    ("five decimals", 0.00001, None, None, "4 decimals"),
    ("negative memory", None, -512, None, "whole number of MB"),
    ("a negative resource", None, None, {"pool": -1}, "above 0"),
    ("a NaN resource", None, None, {"pool": math.nan}, "above 0"),
    ("a resource that is a word", None, None, {"pool": "one"}, "must be a number"),
    ("a resource that is a bool", None, None, {"pool": True}, "must be a number"),
    ("a name with a space", None, None, {"a b": 1}, "resource name"),
    ("a name with a slash", None, None, {"../x": 1}, "resource name"),
    ("a name not ASCII", None, None, {"pöol": 1}, "resource name"),
    ("an empty name", None, None, {"": 1}, "needs a name"),
    ("CPU as a resource", None, None, {"CPU": 1}, "use --cpus"),
    ("memory as a resource", None, None, {"memory": 1}, "use --cpus / --memory-mb"),
    ("too many resources", None, None, {f"r{i}": 1 for i in range(17)}, "at most 16"),
]


@pytest.mark.parametrize(("what", "cpus", "memory_mb", "resources", "says"), WIRE_BAD, ids=[c[0] for c in WIRE_BAD])
def test_a_requests_bad_placement_is_refused(what: str, cpus: float | None, memory_mb: int | None,
                                             resources: dict[str, Any] | None, says: str) -> None:
    with pytest.raises(BadRequest, match=says):
        wire_placement(cpus, memory_mb, resources)


FORM_BAD = [("-1", "", "", "--cpus"), ("nan", "", "", "--cpus"), ("inf", "", "", "--cpus"), ("1e3", "", "", "--cpus"),
            ("", "0.5", "", "--memory-mb"), ("", "-512", "", "--memory-mb"), ("", "", "pool", "key=value"),
            ("", "", "pool=nan", "like 2 or 0.5"), ("", "", "pool=-1", "like 2 or 0.5"),
            ("", "", "CPU=1", "use --cpus"), ("", "", "a b=1", "resource name"), ("", "", "pool=1,pool=1", "twice")]


@pytest.mark.parametrize(("cpus", "memory_mb", "resources", "says"), FORM_BAD)
def test_the_forms_bad_placement_is_refused(cpus: str, memory_mb: str, resources: str, says: str) -> None:
    with pytest.raises(BadRequest, match=says):
        form_placement(cpus, memory_mb, resources)


def test_nothing_asked_is_no_placement_and_both_forms_agree() -> None:
    assert wire_placement(None, None, None) is None and wire_placement(None, None, {}) is None
    assert form_placement("", " ", "") is None
    assert wire_placement(0.5, 512, {"pool": 1}) == form_placement(" 0.5", "512 ", "pool=1") == \
        Placement(0.5, 512, (("pool", 1.0),))


def test_the_wire_takes_resources_as_an_object_of_numbers() -> None:
    req = build("request_spawn", {"name": "fresh", "cpus": 1, "memory_mb": 256, "resources": {"pool": 1}})
    assert isinstance(req, RequestSpawn) and (req.cpus, req.memory_mb, req.resources) == (1, 256, {"pool": 1})
    for bad in ({"resources": "pool=1"}, {"resources": {"pool": "1"}}, {"resources": {"pool": True}},
                {"resources": [["pool", 1]]}, {"memory_mb": 0.5}, {"cpus": "2"}, {"cpus": True}):
        with pytest.raises(BadRequest, match="must be"):
            build("request_spawn", {"name": "fresh", **bad})


CLUSTER_BAD = [
    (Placement(resources=(("gpu_pool", 1.0),)), "unknown resource gpu_pool"),  # only on a dead node
    (Placement(resources=(("tpu", 1.0),)), "unknown resource tpu.*custom resources there: pool"),
    (Placement(resources=(("pool", 2.0),)), "can ever hold pool=2"),
    (Placement(cpus=4.0), "can ever hold cpus=4"),
    (Placement(cpus=1.0, memory_mb=8192, resources=(("pool", 1.0),)), "can ever hold"),
]


@pytest.mark.parametrize(("placement", "says"), CLUSTER_BAD, ids=[p.describe() for p, _ in CLUSTER_BAD])
async def test_the_cluster_refuses_what_no_live_node_holds(cluster: Cluster, placement: Placement,
                                                           says: str) -> None:
    with pytest.raises(BadRequest, match=says):
        await check_placement_on(cluster, placement)


async def test_what_a_worker_holds_passes_and_a_backend_without_placement_refuses_any(cluster: Cluster) -> None:
    fits = Placement(2.0, 1024, (("pool", 1.0),))
    assert await check_placement_on(cluster, fits) == fits
    assert await check_placement_on(Local(), None) is None
    with pytest.raises(BadRequest, match="the local backend runs every agent on this host"):
        await check_placement_on(Local(), fits)


# --- the paths, with real actors -----------------------------------------------------

class World:
    def __init__(self, tmp_path: Path) -> None:
        self.paths = StatePaths(tmp_path / "state")
        self.paths.root.mkdir(parents=True)
        self.db = open_hive_db(self.paths.db)
        hub = Hub()
        clock = LoopClock(IOLoop.current())
        self.backend = SleepBackend()
        broker = Broker.start(self.db, clock, hub).proxy()
        self.broker = Handle(broker)
        coordinator = Coordinator.start(Settings(), self.paths, self.backend, broker, clock, hub, NoSockets()).proxy()
        self.coordinator = Handle(coordinator)
        self.approvals: Any = Approvals.start(self.paths, coordinator, broker, hub).proxy()

    def made(self) -> dict[str, Any]:
        """Everything a refused request might have made."""
        return {"approvals": Approval.select().count(), "containers": Container.select().count(),
                "dirs": sorted(p.name for p in self.paths.agents.iterdir()) if self.paths.agents.is_dir() else []}

    def close(self) -> None:
        pykka.ActorRegistry.stop_all()
        self.db.close()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = World(tmp_path)
    await w.broker.ask(Broker.register, MANAGER, None)
    yield w
    w.close()


async def test_a_spawn_request_with_a_bad_placement_queues_nothing(world: World, cluster: Cluster) -> None:
    before = world.made()
    refused: list[tuple[Any, Placement]] = [(cluster, p) for p, _ in CLUSTER_BAD]
    refused.append((Local(), Placement(resources=(("pool", 1.0),))))  # as hive spawn: not placed here
    for backend, placement in refused:
        with pytest.raises(BadRequest):
            await gate.request_spawn(world.approvals, MANAGER, "fresh", backend=backend, placement=placement)
    for _what, *fields, _ in WIRE_BAD:
        with pytest.raises(BadRequest):  # what the ops do: parse, then ask
            await gate.request_spawn(world.approvals, MANAGER, "fresh", backend=cluster,
                                     placement=wire_placement(*fields))
    assert world.made() == before


async def test_the_approved_placement_is_what_runs(world: World, cluster: Cluster) -> None:
    placed = Placement(1.0, 512, (("pool", 1.0),))
    out = await gate.request_spawn(world.approvals, MANAGER, "fresh", backend=cluster, placement=placed)
    aid = out["approval_id"]
    pending = (await gate.approvals(world.approvals))["pending"]
    assert [(a["id"], a["config"]["placement"]) for a in pending] == [
        (aid, {"cpus": 1, "memory_mb": 512, "resources": {"pool": 1}})]  # shown to the operator
    assert (await gate.approve(world.approvals, aid))["approval"]["status"] == "approved"
    applied = json.loads((world.paths.applied(AgentName("fresh")) / CONFIG_FILE).read_text())
    assert applied["placement"] == pending[0]["config"]["placement"]
    assert world.paths.load_applied(AgentName("fresh")).placement == placed
    # No placement asked: none written, whatever the backend.
    aid = (await gate.request_spawn(world.approvals, OPERATOR, "plain", backend=Local()))["approval_id"]
    assert (await gate.approve(world.approvals, aid))["approval"]["status"] == "approved"
    assert world.paths.load_applied(AgentName("plain")).placement is None


async def test_a_proposed_placement_is_checked_against_the_cluster(world: World, cluster: Cluster) -> None:
    await world.coordinator.ask(Coordinator.spawn, "finn", None, "a prompt")
    repo = world.paths.config_dir(AgentName("finn"))
    head = config_repo.resolve_commit(repo, "HEAD")
    for placement, says in (({"resources": {"pool": 2}}, "agent_json: placement pool=2: no node"),
                            ({"resources": {"tpu": 1}}, "agent_json: placement tpu=1: unknown resource tpu"),
                            ({"cpus": -1}, "above 0"), ({"resources": {"CPU": 1}}, "use --cpus")):
        with pytest.raises(HiveError, match=says):
            await gate.propose_config(world.approvals, MANAGER, "finn", "move it", None,
                                      json.dumps({"placement": placement}), backend=cluster)
    assert config_repo.resolve_commit(repo, "HEAD") == head and Approval.select().count() == 0  # nothing committed
    out = await gate.propose_config(world.approvals, MANAGER, "finn", "on a worker", None,
                                    json.dumps({"placement": {"resources": {"pool": 1}}}), backend=cluster)
    assert out["commit"] != head and Approval.select().count() == 1
    # A backend that places nothing takes it as it is (a config may move between hives).
    out = await gate.propose_config(world.approvals, MANAGER, "finn", "bigger", None,
                                    json.dumps({"placement": {"resources": {"pool": 2}}}), backend=Local())
    assert Approval.select().count() == 2


async def test_a_commit_queued_for_apply_is_checked_against_the_cluster(world: World, cluster: Cluster) -> None:
    await world.coordinator.ask(Coordinator.spawn, "finn", None, "a prompt")
    repo = world.paths.config_dir(AgentName("finn"))
    big = config_repo.commit_change(repo, {CONFIG_FILE: json.dumps({"placement": {"resources": {"pool": 3}}})},
                                    "by hand", "operator")
    with pytest.raises(BadRequest, match=f"agent.json in {big[:12]}: placement pool=3: no node"):
        await gate.request_apply_commit(world.approvals, OPERATOR, "finn", big[:12], backend=cluster)
    assert Approval.select().count() == 0
    fits = config_repo.commit_change(repo, {CONFIG_FILE: json.dumps({"placement": {"resources": {"pool": 1}}})},
                                     "by hand", "operator")
    out = await gate.request_apply_commit(world.approvals, OPERATOR, "finn", fits[:12], backend=cluster)
    assert Approval.get_by_id(out["approval_id"]).commit == fits
    assert (await gate.request_apply_commit(world.approvals, OPERATOR, "finn", big, backend=Local()))["approval_id"]
