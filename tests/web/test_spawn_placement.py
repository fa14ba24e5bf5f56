"""The spawn flags --cpus/--memory-mb/--resources (issue 18), before anything is made:
refused by a backend without placement, checked by one with it, and carried in
agent.json; a crash report carries the node only when there is one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hyperhive.actors.events import ContainerCrash
from hyperhive.actors.snapshots import ContainerSnapshot
from hyperhive.errors import BadRequest
from hyperhive.paths import AgentConfig
from hyperhive.placement import Placement, parse_placement_flags
from hyperhive.web.operator.placement import check_spawn_placement


class _Local:
    kind = "local"


class _Ray:
    kind = "ray"

    def __init__(self) -> None:
        self.checked: list[Placement] = []

    def check(self, placement: Placement) -> None:
        self.checked.append(placement)
        if dict(placement.resources).get("pool", 0) > 1:
            raise BadRequest("no node of the Ray cluster can ever hold pool=2")


def _run(backend: Any, *flags: str | None) -> Placement | None:
    return asyncio.run(check_spawn_placement(backend, *flags))  # type: ignore[arg-type]


def test_no_flags_no_placement_whatever_the_backend() -> None:
    assert _run(_Local(), None, None, None) is None
    assert _run(_Ray(), None, None, None) is None


def test_a_backend_without_placement_refuses_the_flags() -> None:
    with pytest.raises(BadRequest, match="the local backend runs every agent on this host"):
        _run(_Local(), None, None, "pool=1")


def test_the_ray_backend_checks_the_placement_and_refuses_what_no_node_holds() -> None:
    ray = _Ray()
    assert _run(ray, "2", "512", "pool=1") == parse_placement_flags("2", "512", "pool=1")
    assert len(ray.checked) == 1
    with pytest.raises(BadRequest, match="pool=2"):
        _run(ray, None, None, "pool=2")
    with pytest.raises(BadRequest, match="--resources"):
        _run(ray, None, None, "pool")  # parsed before the cluster is asked
    assert len(ray.checked) == 2


def test_agent_json_placement_round_trips() -> None:
    cfg = AgentConfig.from_json('{"placement": {"cpus": 1, "resources": {"pool": 1}}}')
    assert cfg.placement == parse_placement_flags("1", None, "pool=1")
    assert AgentConfig.from_json(cfg.to_json()) == cfg
    assert "placement" not in AgentConfig().to_json()
    with pytest.raises(BadRequest, match="placement has unknown key"):
        AgentConfig.from_json('{"placement": {"gpus": 1}}')


def test_the_node_shows_only_where_there_is_one() -> None:
    crash = ContainerCrash("a", "killed by SIGKILL", "node lost", 1.0, {"node_id": "n1", "address": "10.0.0.2"})
    assert crash.payload()["node"] == {"node_id": "n1", "address": "10.0.0.2"}
    assert "node" not in ContainerCrash("a", "exit 1", "crash", 1.0).payload()
    assert "node" not in ContainerSnapshot("a", "agent", "running").to_wire()
    assert ContainerSnapshot("a", "agent", "running", node={"node_id": "n1", "address": "x"}).to_wire()["node"]
