"""Each agent's secret for the TCP channel (issue 18), as the daemon keeps it.

`AgentSecrets.issue` makes a new random secret (``secrets.token_urlsafe(32)``,
256 bits) for an agent, replacing the one it had, and returns it: the caller
hands it to whoever creates the agent's Ray actor (an argument of the
creation call), never to a command line or agent.json. The daemon keeps only
an HMAC-SHA256 of it, keyed with a key of its own and bound to the agent's
name (a hash copied to another agent's entry matches nothing).

Where: ``<state>/tls/agent-secrets.key`` (32 random bytes) and
``<state>/tls/agent-secrets.json`` (``{agent: mac hex}``), both 0600 in the
daemon's own dir, never in the agents dir (other nodes mount it). A file and
not hive.sqlite: the check runs on the loop at every connection, against a
map held in memory (no I/O, no actor), and the writes are rare (an actor
made, an agent destroyed), each one atomic.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
from pathlib import Path

import hyperhive.logs as logs
from hyperhive.agent_tls import tls_dir, write_private
from hyperhive.agent_wire import MAX_SECRET
from hyperhive.names import is_valid_name
from hyperhive.sandbox.safefs import read_nofollow

__all__ = ["AgentSecrets"]

_log = logs.get("hyperhive.agent_link")

KEY_FILE = "agent-secrets.key"
MACS_FILE = "agent-secrets.json"
_MAX_FILE = 16 << 20  # 65536 agents at ~90 bytes each, with room
_DUMMY = bytes(32)  # compared against when the agent has no secret: the same work either way


class AgentSecrets:
    """The MACs of every agent's secret; any thread (one lock)."""

    def __init__(self, root: Path) -> None:
        self._dir = tls_dir(root)
        self._lock = threading.Lock()  # the map: held for no I/O (the loop's check waits on it)
        self._writing = threading.Lock()  # one write of the file at a time, in the map's order
        self._key = self._load_key()
        self._macs = self._load_macs()

    def _load_key(self) -> bytes:
        key = read_nofollow(self._dir, KEY_FILE, limit=64)
        if key is None or len(key) != 32:
            key = os.urandom(32)
            write_private(self._dir / KEY_FILE, key)
            self._drop_macs()  # MACs under another key match nothing
        return key

    def _drop_macs(self) -> None:
        try:
            os.unlink(self._dir / MACS_FILE)
        except FileNotFoundError:
            pass

    def _load_macs(self) -> dict[str, bytes]:
        raw = read_nofollow(self._dir, MACS_FILE, limit=_MAX_FILE + 1)
        if raw is None:
            return {}
        try:
            obj = json.loads(raw) if len(raw) <= _MAX_FILE else None
            if not isinstance(obj, dict):
                raise ValueError("not an object")
            return {a: bytes.fromhex(m) for a, m in obj.items()
                    if is_valid_name(a) and isinstance(m, str) and len(m) == 64}
        except ValueError as exc:  # every agent needs a new secret: refusing all is the safe failure
            _log.error("agent_link.secrets_unreadable", path=str(self._dir / MACS_FILE), error=str(exc))
            return {}

    def _mac(self, agent: str, secret: str) -> bytes:
        return hmac.new(self._key, f"{agent}\n{secret}".encode("utf-8", "surrogatepass"), hashlib.sha256).digest()

    def _save(self) -> None:
        """Under ``_writing``: the map as it is now, written."""
        with self._lock:
            data = json.dumps({a: m.hex() for a, m in sorted(self._macs.items())}).encode()
        write_private(self._dir / MACS_FILE, data)

    def issue(self, agent: str) -> str:
        """A new secret for ``agent`` (the old one stops working). Writes a file: not on the loop."""
        if not is_valid_name(agent):
            raise ValueError(f"{agent!r} is not an agent name")
        secret = secrets.token_urlsafe(32)
        with self._writing:
            with self._lock:
                self._macs[agent] = self._mac(agent, secret)
            self._save()
        _log.info("agent_link.secret_issued", agent=agent)
        return secret

    def check(self, agent: str, secret: str) -> bool:
        """Whether ``secret`` is ``agent``'s, in constant time whatever the agent (known or not)."""
        if not isinstance(agent, str) or not isinstance(secret, str) or len(secret) > MAX_SECRET:
            return False
        with self._lock:
            want = self._macs.get(agent)
        got = self._mac(agent, secret)
        return hmac.compare_digest(got, _DUMMY if want is None else want) and want is not None

    def forget(self, agent: str) -> None:
        """``agent`` has no secret any more (destroyed). Writes a file: not on the loop."""
        with self._writing:
            with self._lock:
                if self._macs.pop(agent, None) is None:
                    return
            self._save()
        _log.info("agent_link.secret_forgotten", agent=agent)

    def knows(self, agent: str) -> bool:
        with self._lock:
            return agent in self._macs
