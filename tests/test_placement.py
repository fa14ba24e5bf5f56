"""Placement (issue 18): the spawn flags and agent.json's ``placement`` parsed
into one `Placement`, its Ray options, and `check_placement` against node lists
shaped like ``ray.nodes()``. Pure: no Ray here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hyperhive.errors import BadRequest
from hyperhive.placement import Placement, check_placement, parse_placement_flags, parse_placement_json

MB = 1024 * 1024


@pytest.mark.parametrize(("cpus", "memory_mb", "resources", "want"), [
    (None, None, None, Placement()),
    ("2", None, None, Placement(cpus=2.0)),
    ("0.5", "512", None, Placement(cpus=0.5, memory_mb=512)),
    (" 1 ", None, "pool=1", Placement(cpus=1.0, resources=(("pool", 1.0),))),
    (None, None, "zeta=2, alpha=0.25", Placement(resources=(("alpha", 0.25), ("zeta", 2.0)))),
    (None, None, "GPU=1,my-pool.v2=1,_x=3", Placement(resources=(("GPU", 1.0), ("_x", 3.0), ("my-pool.v2", 1.0)))),
])
def test_good_flags(cpus: str | None, memory_mb: str | None, resources: str | None, want: Placement) -> None:
    assert parse_placement_flags(cpus, memory_mb, resources) == want


@pytest.mark.parametrize(("cpus", "memory_mb", "resources", "says"), [
    ("-1", None, None, "--cpus must be a number"),
    ("0", None, None, "above 0"),
    ("nan", None, None, "must be a number"),
    ("inf", None, None, "must be a number"),
    ("1e400", None, None, "must be a number"),
    ("two", None, None, "must be a number"),
    ("1.5", None, None, "whole number"),
    ("0.00001", None, None, "4 decimals"),
    ("99999", None, None, "at most 4096"),
    (None, "0", None, "1..16777216"),
    (None, "-5", None, "whole number of MB"),
    (None, "1.5", None, "whole number of MB"),
    (None, "99999999999", None, "whole number of MB"),
    (None, None, "", "empty"),
    (None, None, "pool", "'pool' is not key=value"),
    (None, None, "pool=1,", "'' is not key=value"),
    (None, None, "=1", "needs a name"),
    (None, None, "pool=", "must be a number"),
    (None, None, "pool=0", "above 0"),
    (None, None, "pool=-1", "must be a number"),
    (None, None, "pool=nan", "must be a number"),
    (None, None, "pool=1e9", "must be a number"),
    (None, None, "pool=10000000", "at most 1000000"),
    (None, None, "pool=1,pool=2", "given twice"),
    (None, None, "po ol=1", "must be a letter"),
    (None, None, "pöol=1", "must be a letter"),
    (None, None, "node:10.0.0.1=1", "must be a letter"),
    (None, None, "a;rm -rf=1", "must be a letter"),
    (None, None, "x" * 64 + "=1", "at most 63"),
    (None, None, "CPU=1", "use --cpus"),
    (None, None, "memory=1", "use --cpus"),
    (None, None, ",".join(f"r{i}=1" for i in range(17)), "at most 16"),
])
def test_bad_flags_are_refused_clearly(cpus: str | None, memory_mb: str | None, resources: str | None,
                                       says: str) -> None:
    with pytest.raises(BadRequest) as err:
        parse_placement_flags(cpus, memory_mb, resources)
    assert says in err.value.message and "\n" not in err.value.message


@pytest.mark.parametrize(("raw", "want"), [
    ({}, Placement()),
    ({"cpus": 1}, Placement(cpus=1.0)),
    ({"cpus": 0.25, "memory_mb": 256, "resources": {"pool": 1}},
     Placement(cpus=0.25, memory_mb=256, resources=(("pool", 1.0),))),
    ({"resources": {}}, Placement()),
])
def test_good_agent_json(raw: dict[str, Any], want: Placement) -> None:
    got = parse_placement_json(raw)
    assert got == want
    assert parse_placement_json(json.loads(json.dumps(got.to_json()))) == got  # what it writes reads back


@pytest.mark.parametrize(("raw", "says"), [
    ([], "must be an object"),
    ("pool=1", "must be an object"),
    ({"gpus": 1}, "unknown key(s): gpus"),
    ({"cpus": True}, "must be a number"),
    ({"cpus": "2"}, "must be a number"),
    ({"cpus": float("nan")}, "above 0"),
    ({"cpus": float("inf")}, "above 0"),
    ({"cpus": -1}, "above 0"),
    ({"cpus": 10 ** 30}, "at most"),
    ({"memory_mb": 1.5}, "whole number of MB"),
    ({"memory_mb": 1 << 40}, "whole number of MB"),
    ({"memory_mb": False}, "whole number of MB"),
    ({"resources": ["pool"]}, "must be an object"),
    ({"resources": {"": 1}}, "needs a name"),
    ({"resources": {"pool": "1"}}, "must be a number"),
    ({"resources": {"pool": None}}, "must be a number"),
    ({"resources": {"pool": 1.5}}, "whole number"),
    ({"resources": {"bad name": 1}}, "must be a letter"),
    ({"resources": {"object_store_memory": 1}}, "use --cpus"),
])
def test_bad_agent_json_is_refused_clearly(raw: Any, says: str) -> None:
    with pytest.raises(BadRequest) as err:
        parse_placement_json(raw, where="agents/x/config/agent.json")
    assert says in err.value.message and err.value.message.startswith("agents/x/config/agent.json: placement")


def test_ray_options() -> None:
    assert Placement().ray_options() == {"num_cpus": 0}  # never Ray's default of 1 CPU per actor
    p = Placement(cpus=2.0, memory_mb=512, resources=(("GPU", 0.5), ("pool", 1.0)))
    assert p.ray_options() == {"num_cpus": 2.0, "memory": 512 * MB, "num_gpus": 0.5, "resources": {"pool": 1.0}}
    assert p.needs() == {"CPU": 2.0, "memory": 512.0 * MB, "GPU": 0.5, "pool": 1.0}
    assert p.describe() == "cpus=2 memory_mb=512 GPU=0.5 pool=1" and Placement().describe() == "nothing"


def _node(alive: bool = True, **resources: float) -> dict[str, Any]:
    return {"NodeID": "n", "Alive": alive, "Resources": resources}


HEAD = _node(memory=8e9, object_store_memory=8e7)  # no CPU, no pool: no agent capacity
WORKER = _node(CPU=1, memory=2e9, pool=1)
CLUSTER = [HEAD, WORKER, WORKER]


@pytest.mark.parametrize("placement", [
    Placement(),
    Placement(resources=(("pool", 1.0),)),
    Placement(cpus=1.0, memory_mb=1024, resources=(("pool", 0.5),)),
    Placement(memory_mb=4096),  # the head has that much
])
def test_placements_some_node_can_hold(placement: Placement) -> None:
    check_placement(placement, CLUSTER)


@pytest.mark.parametrize(("placement", "nodes", "says"), [
    (Placement(resources=(("pool2", 1.0),)), CLUSTER, "unknown resource pool2: no node of the Ray cluster offers it "
                                                       "(custom resources there: pool)"),
    (Placement(resources=(("GPU", 1.0),)), CLUSTER, "unknown resource GPU"),
    (Placement(resources=(("pool", 2.0),)), CLUSTER, "no node of the Ray cluster can ever hold pool=2 "
                                                     "(the closest offers pool=1)"),
    (Placement(cpus=2.0), CLUSTER, "can ever hold cpus=2 (the closest offers cpus=1)"),
    # each part fits some node, but no single node holds them all
    (Placement(memory_mb=4096, resources=(("pool", 1.0),)), CLUSTER, "can ever hold memory_mb=4096 pool=1"),
    # a dead node's offer does not count
    (Placement(resources=(("big", 1.0),)), [*CLUSTER, _node(alive=False, big=1)], "unknown resource big"),
    (Placement(), [_node(alive=False, CPU=4)], "no live node"),
    (Placement(), [], "no live node"),
])
def test_placements_no_node_can_ever_hold_are_refused(placement: Placement, nodes: list[dict[str, Any]],
                                                      says: str) -> None:
    with pytest.raises(BadRequest) as err:
        check_placement(placement, nodes)
    assert says in err.value.message, err.value.message


def test_applied_placement_reads_the_applied_config_without_following_a_link(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    from hyperhive.backends.ray_backend import applied_placement
    from hyperhive.names import AgentName
    from hyperhive.paths import StatePaths

    paths, a = StatePaths(tmp_path / "state"), AgentName("a")
    assert applied_placement(paths, a) == Placement()  # no applied config at all
    paths.applied(a).mkdir(parents=True)
    cfg = paths.applied(a) / "agent.json"
    cfg.write_text(json.dumps({"driver": "builtin", "placement": {"resources": {"pool": 1}}}))
    assert applied_placement(paths, a) == Placement(resources=(("pool", 1.0),))
    cfg.write_text(json.dumps({"placement": {"resources": {"pool": -1}}}))
    with pytest.raises(BadRequest, match="above 0"):
        applied_placement(paths, a)
    cfg.unlink()
    (tmp_path / "elsewhere.json").write_text("{}")
    cfg.symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(BadRequest, match="cannot be read"):
        applied_placement(paths, a)
