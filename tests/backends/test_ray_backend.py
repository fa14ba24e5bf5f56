"""The ray backend against a real local Ray cluster (issue 18): a head with no
agent capacity and two worker raylets offering ``pool: 1`` each
(``ray.cluster_utils.Cluster``, one per module: Ray is heavy on two cores).

The harnesses start with no daemon behind their socket (they wait for it), as
in tests/backends/test_local.py: enough to see where the backend ran them,
in the local backend's sandbox, and what becomes of them. The node-loss test
runs last: it removes a worker.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import support
from support import harness_below, passable, pid_alive, wait_for

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402
from ray_support import pool_cluster  # noqa: E402

from hyperhive.backends.ray_backend import (  # noqa: E402
    NODE_LOST,
    RayBackend,
    RayHandle,
    RayUnreachable,
    actor_name,
    open_ray_backend,
)
from hyperhive.backends.ray_connect import NAMESPACE, probe  # noqa: E402
from hyperhive.backends.ray_node import ENDED, RUNNING, NodeOptions  # noqa: E402
from hyperhive.errors import BackendFailed, BadRequest  # noqa: E402
from hyperhive.names import AgentName  # noqa: E402
from hyperhive.paths import AgentConfig, StatePaths  # noqa: E402
from hyperhive.placement import Placement, parse_placement_flags  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.ray]

POOL = parse_placement_flags(resources="pool=1")
NAMES = ("a", "b", "c", "d", "e", "f")
Exits = list[tuple[int | None, str | None]]


class Rig:
    def __init__(self, cluster: Cluster, workers: list[Any], paths: StatePaths, backend: RayBackend) -> None:
        self.cluster, self.workers, self.paths, self.backend = cluster, workers, paths, backend

    @property
    def worker_ids(self) -> set[str]:
        return {w.node_id for w in self.workers}


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    support.require_e2e("a Ray cluster (ray.cluster_utils.Cluster)")
    with pool_cluster() as (cluster, workers):
        root = tmp_path_factory.mktemp("ray")
        passable(root)
        paths = StatePaths(root / "state")
        for name in NAMES:
            paths.create_agent(AgentName(name), AgentConfig())
        backend = open_ray_backend(cluster.address, paths, NodeOptions(memory_mb=512, pids=128),
                                   placement_of=lambda name: POOL)
        try:
            yield Rig(cluster, workers, paths, backend)
        finally:
            for name in NAMES:
                backend.destroy(AgentName(name))
            backend.close()


def _parent_cmdline(pid: int) -> bytes:
    ppid = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1]
    return Path(f"/proc/{ppid}/cmdline").read_bytes()


def _start(rig: Rig, name: str, exits: Exits) -> RayHandle:
    return rig.backend.start(AgentName(name), "builtin", lambda rc, reason: exits.append((rc, reason)))


def test_an_agent_placed_on_the_pool_runs_its_sandboxed_harness_on_a_worker(rig: Rig) -> None:
    a, exits = AgentName("a"), []  # type: Exits
    handle = _start(rig, a, exits)
    try:
        assert handle.node["node_id"] in rig.worker_ids  # never the head: it offers no pool
        assert rig.backend.node(a) == handle.node and rig.backend.nodes_in_use() == {handle.node["node_id"]: 1}
        assert handle.pid is not None
        harness = wait_for(lambda: harness_below(handle.pid or 0), timeout=20, what="the harness below the launcher")
        assert b"NodeAgent" in _parent_cmdline(handle.pid)  # started by the agent's Ray actor process
        assert Path(f"/proc/{harness}/status").read_text().count("CapEff:\t0000000000000000") == 1
        actor = ray.get_actor(actor_name(rig.paths, a), namespace=NAMESPACE)
        assert ray.get(actor.running.remote())["pid"] == handle.pid
        wait_for(lambda: rig.paths.harness_log(a).exists(), timeout=10, what="harness.log in the agent's dir")
        assert isinstance(rig.backend.journal(a, "harness", 10), str)
        usage = rig.backend.usage(a)
        assert usage is None or (usage["pids"] or 0) >= 1
    finally:
        assert isinstance(rig.backend.stop(handle, timeout=2), int)
    assert not pid_alive(handle.pid) and rig.backend.node(a) is None
    assert exits == []  # asked for: no report


def test_stop_gets_through_while_wait_long_polls_and_ends_the_actor(rig: Rig) -> None:
    b, exits = AgentName("b"), []  # type: Exits
    first = _start(rig, b, exits)
    actor = ray.get_actor(actor_name(rig.paths, b), namespace=NAMESPACE)
    pending = actor.wait.remote(first.pid, 30.0)  # a second long poll besides the watcher's
    assert ray.get(actor.wait.remote(first.pid, 0.0))[0] == RUNNING  # a threaded actor: answered meanwhile
    assert ray.wait([pending], timeout=0)[0] == []
    began = time.monotonic()
    rig.backend.stop(first, timeout=2)
    assert time.monotonic() - began < 8
    assert ray.get(pending, timeout=10)[0] == ENDED  # answered before the stop's own reply
    with pytest.raises(ValueError):  # the container is gone: its pool is free for another agent
        ray.get_actor(actor_name(rig.paths, b), namespace=NAMESPACE)
    second = _start(rig, b, exits)
    try:
        assert second.pid != first.pid and second.node["node_id"] in rig.worker_ids
    finally:
        assert rig.backend.stop(second, timeout=0) in (-signal.SIGTERM, -signal.SIGKILL)  # kill: no grace, as local
    assert not pid_alive(second.pid or 0) and exits == []


def test_an_unasked_exit_is_reported_once_as_the_local_backend_does(rig: Rig) -> None:
    c, exits = AgentName("c"), []  # type: Exits
    handle = _start(rig, c, exits)
    assert handle.pid is not None
    os.killpg(handle.pid, signal.SIGKILL)
    wait_for(lambda: exits, timeout=20, what="the exit report")
    time.sleep(0.5)
    assert exits == [(-signal.SIGKILL, None)]
    assert rig.backend.node(c) is None and rig.backend.last_node(c) is None
    rig.backend.stop(handle, timeout=1)  # after the end: harmless
    assert exits == [(-signal.SIGKILL, None)]


def test_a_new_backend_adopts_a_running_harness_and_destroy_removes_the_actor(rig: Rig) -> None:
    d, exits = AgentName("d"), []  # type: Exits
    assert rig.backend.adopt(d, "builtin", lambda rc, reason: None) is None  # no actor yet
    handle = _start(rig, d, exits)
    rig.backend.release(handle)  # the daemon goes, the agent stays
    later: Exits = []
    other = RayBackend(rig.paths, NodeOptions(memory_mb=512, pids=128), placement_of=lambda name: POOL)
    adopted = other.adopt(d, "builtin", lambda rc, reason: later.append((rc, reason)))
    assert adopted is not None and adopted.pid == handle.pid and adopted.node == handle.node
    assert other.node(d) == handle.node and pid_alive(handle.pid or 0)
    other.release(adopted)
    os.killpg(adopted.pid or 0, signal.SIGKILL)  # it ends while no daemon watches
    third = RayBackend(rig.paths, NodeOptions(memory_mb=512, pids=128), placement_of=lambda name: POOL)
    wait_for(lambda: ray.get(ray.get_actor(actor_name(rig.paths, d), namespace=NAMESPACE).running.remote()) is None,
             timeout=15, what="the actor to see its harness gone")
    assert third.adopt(d, "builtin", lambda rc, reason: None) is None  # nothing to take; the idle actor ended
    with pytest.raises(ValueError):
        ray.get_actor(actor_name(rig.paths, d), namespace=NAMESPACE)
    again = third.start(d, "builtin", lambda rc, reason: later.append((rc, reason)))
    assert ray.get_actor(actor_name(rig.paths, d), namespace=NAMESPACE) is not None
    third.destroy(d)
    with pytest.raises(ValueError):
        ray.get_actor(actor_name(rig.paths, d), namespace=NAMESPACE)
    wait_for(lambda: not pid_alive(again.pid or 0), timeout=10, what="destroy to end the harness")
    assert exits == [] and later == []


def test_an_idle_actor_placed_otherwise_is_replaced_at_start(rig: Rig) -> None:
    """An actor asking for nothing fits even the head (num_cpus=0 there); a start
    with the agent's pool placement replaces it, idle, by one on a worker."""
    a, exits = AgentName("a"), []  # type: Exits
    stale = rig.backend._create(a, Placement().ray_options())
    assert ray.get(stale.placed.remote(), timeout=60) == {"num_cpus": 0}
    handle = _start(rig, a, exits)
    try:
        actor = ray.get_actor(actor_name(rig.paths, a), namespace=NAMESPACE)
        assert actor._actor_id != stale._actor_id and ray.get(actor.placed.remote()) == POOL.ray_options()
        assert handle.node["node_id"] in rig.worker_ids
    finally:
        rig.backend.stop(handle, timeout=2)
    assert exits == []


def test_a_start_that_fails_on_its_node_says_why_and_leaves_no_actor(rig: Rig) -> None:
    f = AgentName("f")
    (rig.paths.applied(f) / "agent.json").write_text('{"limits": "lots"}')  # the node's LocalBackend refuses it
    with pytest.raises(BackendFailed, match="start of f failed on its node: .*limits must be an object"):
        rig.backend.start(f, "builtin", lambda rc, reason: None)
    with pytest.raises(ValueError):
        ray.get_actor(actor_name(rig.paths, f), namespace=NAMESPACE)


def test_placements_the_cluster_cannot_hold_are_refused(rig: Rig) -> None:
    rig.backend.check(POOL)
    with pytest.raises(BadRequest, match="unknown resource pool2"):
        rig.backend.check(parse_placement_flags(resources="pool2=1"))
    with pytest.raises(BadRequest, match="no node of the Ray cluster can ever hold"):
        rig.backend.check(parse_placement_flags(resources="pool=2"))
    with pytest.raises(BadRequest, match="can ever hold"):
        rig.backend.check(Placement(cpus=1.0, resources=(("pool", 1.0),), memory_mb=1 << 23))


def test_an_unreachable_ray_address_fails_fast_with_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # closed again: nothing listens there
    began = time.monotonic()
    with pytest.raises(RayUnreachable) as err:
        probe(f"127.0.0.1:{dead}")
    assert time.monotonic() - began < 5 and "\n" not in err.value.message and "cannot reach" in err.value.message
    with socket.socket() as s:  # something listens, but it is no Ray cluster
        s.bind(("127.0.0.1", 0))
        s.listen()
        began = time.monotonic()
        with pytest.raises(RayUnreachable) as err:
            probe(f"127.0.0.1:{s.getsockname()[1]}", gcs_seconds=3)
        assert time.monotonic() - began < 8 and "\n" not in err.value.message
    with pytest.raises(RayUnreachable, match="nonsense"):
        probe("nonsense")


def test_node_loss_is_a_crash_and_the_next_start_lands_on_the_other_worker(rig: Rig) -> None:
    e, exits = AgentName("e"), []  # type: Exits
    got = threading.Event()

    def on_exit(rc: int | None, reason: str | None) -> None:
        exits.append((rc, reason))
        got.set()

    handle = rig.backend.start(e, "builtin", on_exit)
    old = dict(handle.node)
    harness = wait_for(lambda: harness_below(handle.pid or 0), timeout=20, what="the harness")
    victim = next(w for w in rig.workers if w.node_id == old["node_id"])
    began = time.monotonic()
    rig.cluster.remove_node(victim)
    assert got.wait(30), "no exit report after the node went"
    lost_after = time.monotonic() - began
    assert exits == [(None, NODE_LOST)] and rig.backend.last_node(e) == old
    wait_for(lambda: not pid_alive(harness) and not pid_alive(handle.pid or 0), timeout=15,
             what="the old node's harness ended with its actor (the tether)")
    again = rig.backend.start(e, "builtin", on_exit)  # what ContainerActor's supervision does
    try:
        assert again.node["node_id"] != old["node_id"] and again.node["node_id"] in rig.worker_ids
        wait_for(lambda: harness_below(again.pid or 0), timeout=20, what="the harness on the other worker")
    finally:
        rig.backend.stop(again, timeout=2)
    assert exits == [(None, NODE_LOST)]
    print(f"node lost reported after {lost_after:.1f}s")
