"""PortAllocator actor (F20): each agent's web UI port, sticky in
``agents/<name>/port``.

One actor serializes every choice, so two agents asking at once never both
take the same free port. Other agents claim their port file's port, or their
hash port when they have no file yet (deployments that predate port files).
"""

from __future__ import annotations

import os
from pathlib import Path

import pykka

import hyperhive.logs as logs
from hyperhive.actors.bridge import answers
from hyperhive.actors.ports_core import PORT_SPAN, choose_port, hash_port
from hyperhive.errors import UnknownAgent
from hyperhive.names import AgentName, is_valid_name, validate_name
from hyperhive.paths import StatePaths

__all__ = ["PORT_FILE", "PortAllocator", "read_port_file"]

_log = logs.get("hyperhive.ports")

PORT_FILE = "port"


def read_port_file(path: Path) -> int | None:
    """The port a port file holds, or None when it is missing or not a port."""
    try:
        text = path.read_text().strip()
    except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
        return None
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
        return None
    return int(text)


class PortAllocator(pykka.ThreadingActor):
    def __init__(self, paths: StatePaths, base: int, span: int = PORT_SPAN) -> None:
        super().__init__()
        self._paths = paths
        self._base = base
        self._span = span

    def on_start(self) -> None:
        logs.bind_thread(actor="ports")

    @answers
    def port_for(self, name: str) -> int:
        """``name``'s port, chosen and persisted on first use."""
        return self._port_for(validate_name(name))

    def _port_for(self, name: AgentName) -> int:
        agent = self._paths.agent(name)
        if not agent.is_dir():
            raise UnknownAgent(f"no agent {name!r}")
        own = agent / PORT_FILE
        kept = read_port_file(own)
        if kept is not None:
            return kept
        if own.exists():
            _log.warning("ports.bad_port_file", agent=name, path=str(own))
        port, found = choose_port(name, self._claimed(name), self._base, self._span)
        if not found:
            # Not persisted: a later call may find a slot that has freed up.
            _log.warning("ports.exhausted", agent=name, port=port, base=self._base, span=self._span)
            return port
        tmp = agent / f".{PORT_FILE}.tmp"
        tmp.write_text(f"{port}\n")
        os.replace(tmp, own)
        _log.info("ports.allocated", agent=name, port=port, hash_port=hash_port(name, self._base, self._span))
        return port

    def _claimed(self, name: AgentName) -> set[int]:
        claimed: set[int] = set()
        root = self._paths.agents
        if not root.is_dir():
            return claimed
        for entry in root.iterdir():
            other = entry.name
            if other == name or not is_valid_name(other) or not entry.is_dir():
                continue
            port = read_port_file(entry / PORT_FILE)
            claimed.add(port if port is not None else hash_port(other, self._base, self._span))
        return claimed
