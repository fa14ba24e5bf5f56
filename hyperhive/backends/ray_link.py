"""The agent's TLS relay on its Ray node (issue 18): where its harness finds the daemon.

With ``--agent-listen`` the daemon hands each agent's actor, as a creation
argument only, what its relay needs (`AgentListen.credentials`: address, CA,
the agent's secret). On the node the actor starts an `AgentLink` that binds
the agent's usual sockets (hive, mcp, api, proxy) in a node-local run dir,
``<tmp>/hyperhive-<uid>/<state hash>-<agent>/``: not the shared
``agents/<n>/run/``, where the daemon binds its own when it shares the host.
`NodePaths` is `StatePaths` with that run dir: the node's LocalBackend hands
the harness those sockets (``--socket``, ``--api-socket``, ``--proxy-socket``)
and binds that dir read-only in its sandbox, as it does the daemon's run dir.

The secret stays in this process's memory: never on a command line, in a file
or in the actor's name.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyperhive.agent_link import AgentLink
from hyperhive.names import AgentName
from hyperhive.paths import WEB_SOCKET, StatePaths
from hyperhive.sandbox.relay import nofollow_unix_connector

__all__ = ["NodePaths", "node_run_dir", "remove_run_dir", "start_link"]


def node_run_dir(root: Path, name: AgentName) -> Path:
    """The node-local run dir of the agent; its parent made 0711 and checked ours (no link followed)."""
    base = Path(tempfile.gettempdir()) / f"hyperhive-{os.geteuid()}"
    try:
        os.mkdir(base, 0o711)
    except FileExistsError:
        pass
    st = os.lstat(base)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise OSError(f"{base} is not a directory of ours; refusing to put an agent's sockets there")
    os.chmod(base, 0o711)
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:10]
    return base / f"{digest}-{name}"


def remove_run_dir(run_dir: Path) -> None:
    st = os.lstat(run_dir) if os.path.lexists(run_dir) else None
    if st is not None and stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid():
        shutil.rmtree(run_dir, ignore_errors=True)


def _below_run(leaf: str) -> Any:
    def path(self: NodePaths, name: AgentName) -> Path:
        return self.run(name) / leaf

    return path


@dataclass(frozen=True)
class NodePaths(StatePaths):
    """The agent's paths, but for its run dir: the relay's, on this node."""

    run_dir: Path = Path("/nonexistent")

    def run(self, name: AgentName) -> Path:
        return self.run_dir

    api_socket = _below_run("api.sock")
    proxy_socket = _below_run("proxy.sock")
    socket = _below_run("hive.sock")
    mcp_socket = _below_run("mcp.sock")


def start_link(link: dict[str, Any], run_dir: Path, owner: tuple[int, int] | None,
               web: tuple[Path, int | None] | None = None) -> AgentLink:
    """The relay, its sockets bound in ``run_dir`` (0755, ours), serving on a thread of its own.
    ``web``: the agent's state dir and the uid its harness runs as: the daemon reaches the web UI
    the harness serves on ``web.sock`` there through the relay (never following a link)."""
    run_dir.mkdir(mode=0o755, exist_ok=True)
    st = os.lstat(run_dir)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise OSError(f"{run_dir} is not a directory of ours")
    os.chmod(run_dir, 0o755)
    relay = AgentLink(str(link["address"]), str(link["ca_pem"]), str(link["agent"]), str(link["secret"]),
                      run_dir, owner,
                      web=None if web is None else nofollow_unix_connector(str(web[0]), WEB_SOCKET, web[1]))
    relay.start()
    return relay
