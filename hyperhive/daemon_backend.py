"""The daemon's container backend, as ``--backend`` asks (local, nixos, ray).

The ray backend (issue 18) is imported only here and only when asked for:
hyperhive without Ray installed runs the others. `check_backend` runs first
thing at start (before the state dir is made): Ray missing is one line with
the install hint. `make_backend` connects to ``--ray-address``: a cluster that
does not answer is one line too (`RayUnreachable`), both StartupErrors.
``link_of`` is late-bound: the backend is built before ``--agent-listen``
listens, and asks it for an agent's credentials only when it creates the
agent's actor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hyperhive.backends.base import Backend
from hyperhive.backends.local import LocalBackend
from hyperhive.backends.nixos import NixosBackend
from hyperhive.errors import StartupError
from hyperhive.names import AgentName
from hyperhive.paths import Limits, StatePaths
from hyperhive.settings import Settings

__all__ = ["LinkOf", "check_backend", "make_backend"]

LinkOf = Callable[[AgentName], dict[str, str] | None]


def check_backend(settings: Settings) -> None:
    """Refuse (StartupError) a backend that cannot be had here, before anything is made."""
    if settings.backend == "ray":
        from hyperhive.backends.ray_install import ray_missing

        missing = ray_missing()
        if missing is not None:
            raise StartupError(missing)


def make_backend(settings: Settings, paths: StatePaths, gateway_key: bool,
                 link_of: LinkOf | None = None) -> Backend[Any]:
    limits = Limits(settings.agent_memory_mb, settings.agent_pids)
    if settings.backend == "nixos":
        return NixosBackend.from_env(paths, limits=limits)
    if settings.backend == "ray":
        from hyperhive.backends.ray_backend import open_ray_backend
        from hyperhive.backends.ray_node import NodeOptions

        options = NodeOptions(sandbox=settings.sandbox, memory_mb=limits.memory_mb, pids=limits.pids,
                              uid_base=settings.agent_uid_base, gateway_key=gateway_key)
        return open_ray_backend(settings.ray_address, paths, options, link_of=link_of)
    return LocalBackend(paths, settings.sandbox, limits=limits, uid_base=settings.agent_uid_base,
                        gateway_key=gateway_key)  # SandboxUnavailable: --sandbox on without a sandbox
