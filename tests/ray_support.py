"""The local Ray cluster every Ray test module makes (issue 18): a head with no
agent capacity and two worker raylets offering ``pool: 1`` each, small enough
for two cores; and a daemon on it (`hive serve --backend ray --agent-listen`).

Import it after ``pytest.importorskip("ray")``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray
from ray.cluster_utils import Cluster
from support import Hive, passable

from hyperhive.backends.ray_connect import NAMESPACE
from hyperhive.errors import HiveError

__all__ = ["RAY_ENV", "pool_cluster", "ray_hive"]

_MB = 1024 * 1024
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}


@contextmanager
def pool_cluster() -> Iterator[tuple[Cluster, list[Any]]]:
    """``(cluster, its two workers)``; at the end this process's Ray and the cluster are shut down."""
    os.environ.update(RAY_ENV)
    cluster = Cluster(initialize_head=True, connect=False, head_node_args={
        "num_cpus": 0, "object_store_memory": 80 * _MB, "include_dashboard": False})
    try:
        workers = [cluster.add_node(num_cpus=1, resources={"pool": 1}, object_store_memory=80 * _MB)
                   for _ in range(2)]
        cluster.wait_for_nodes()
        yield cluster, workers
    finally:
        ray.shutdown()
        cluster.shutdown()


@contextmanager
def ray_hive(root: Path, args: list[str], env: dict[str, str] | None = None,
             destroy: tuple[str, ...] = ()) -> Iterator[tuple[Cluster, list[Any], Hive]]:
    """A daemon at ``root/state`` on a `pool_cluster` (``args`` after the backend's own), this
    process connected to the cluster; at the end the ``destroy`` agents are purged and the daemon stopped."""
    with pool_cluster() as (cluster, workers):
        passable(root)
        hive = Hive(root / "state", ["--backend", "ray", "--ray-address", cluster.address,
                                     "--agent-listen", "127.0.0.1:0", *args], env={**RAY_ENV, **(env or {})})
        try:
            hive.start()
            ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False)
            yield cluster, workers, hive
        finally:
            for name in destroy:
                try:
                    hive.admin("destroy", name=name, purge=True, force=True)
                except HiveError:
                    pass
            hive.stop()
