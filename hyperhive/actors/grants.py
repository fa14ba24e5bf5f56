"""The tools each agent was granted "from now on" (issue 14, item 3).

Kept by the daemon in ``agents/<n>/granted-tools.json`` (a JSON list of tool
names): in the agent's daemon-owned dir, never in its ``state/`` or ``work/``
(which the agent writes) nor in its config (which the operator reviews and
commits). Read without following links, written whole (a temp file renamed
over it). Used by the Questions actor only, on its thread: the cache is its.
Without a state dir (tests) grants live in memory.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import hyperhive.logs as logs
from hyperhive.names import AgentName, validate_name
from hyperhive.paths import StatePaths
from hyperhive.sandbox.safefs import read_nofollow

__all__ = ["GRANTS_FILE", "GrantStore"]

GRANTS_FILE = "granted-tools.json"
MAX_GRANTS = 256

_log = logs.get("hyperhive.grants")


class GrantStore:
    def __init__(self, paths: StatePaths | None = None) -> None:
        self.paths = paths
        self._cache: dict[str, tuple[str, ...]] = {}
        self._loaded = False

    def _load_all(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self.paths is None or not self.paths.agents.is_dir():
            return
        for d in sorted(self.paths.agents.iterdir()):
            with contextlib.suppress(Exception):
                name = validate_name(d.name)
                tools = self._read(name)
                if tools:
                    self._cache[name] = tools

    def _read(self, name: AgentName) -> tuple[str, ...]:
        assert self.paths is not None
        raw = read_nofollow(self.paths.agent(name), GRANTS_FILE, limit=1 << 16)
        if raw is None:
            return ()
        try:
            value = json.loads(raw)
        except ValueError:
            _log.warning("grants.unreadable", agent=name)
            return ()
        return tuple(dict.fromkeys(t for t in value if isinstance(t, str))) if isinstance(value, list) else ()

    def _write(self, name: str, tools: tuple[str, ...]) -> None:
        if self.paths is None:
            return
        d: Path = self.paths.agent(validate_name(name))
        if not d.is_dir():
            return  # a purged agent: nothing to keep
        tmp = d / (GRANTS_FILE + ".tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(list(tools)) + "\n")
        os.replace(tmp, d / GRANTS_FILE)

    def of(self, name: str) -> tuple[str, ...]:
        self._load_all()
        if name not in self._cache:  # forgotten (destroyed): the file says, if it is still there
            self._cache[name] = self._read(validate_name(name)) if self.paths is not None else ()
        return self._cache[name]

    def forget(self, name: str) -> None:
        """The agent was destroyed (maybe purged): read its file again when it is asked about."""
        self._cache.pop(name, None)

    def all(self) -> dict[str, list[str]]:
        self._load_all()
        return {n: list(t) for n, t in sorted(self._cache.items()) if t}

    def grant(self, name: str, tool: str) -> bool:
        """Add ``tool``; False if it was granted already (or the list is full)."""
        have = self.of(name)
        if tool in have or len(have) >= MAX_GRANTS:
            return False
        self._set(name, (*have, tool))
        _log.info("grants.granted", agent=name, tool=tool)
        return True

    def revoke(self, name: str, tool: str) -> bool:
        have = self.of(name)
        if tool not in have:
            return False
        self._set(name, tuple(t for t in have if t != tool))
        _log.info("grants.revoked", agent=name, tool=tool)
        return True

    def _set(self, name: str, tools: tuple[str, ...]) -> None:
        self._write(name, tools)
        self._cache[name] = tools
