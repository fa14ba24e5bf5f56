"""The store's reserve (issue 16): agents share the filesystem hive.sqlite lives
on (their state dirs and workspaces are under the same state dir by default),
so an agent could fill it and starve the broker. Past a free-space floor
(``--min-free-mb``) the agents' own sends are refused, ``storage_unavailable``
with the figures, while the operator's and the daemon's writes (answers,
approvals, the harnesses' kicks) still have the reserve to commit in.

The free space is read with ``statvfs`` at most once a second.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from hyperhive.errors import StorageUnavailable

__all__ = ["Reserve"]


class Reserve:
    def __init__(self, path: Path, min_free_mb: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._path = path
        self._floor = min_free_mb * 1024 * 1024
        self._clock = clock
        self._read_at = -1.0
        self._free = 0

    def free_bytes(self) -> int:
        now = self._clock()
        if now - self._read_at >= 1.0 or now < self._read_at:
            try:
                st = os.statvfs(self._path)
                self._free = st.f_bavail * st.f_frsize
            except OSError:
                self._free = self._floor  # cannot tell: the commit itself will say
            self._read_at = now
        return self._free

    def check_agent_write(self, agent: str) -> None:
        """StorageUnavailable when the free space is under the floor (0: no floor)."""
        if self._floor <= 0:
            return
        free = self.free_bytes()
        if free < self._floor:
            raise StorageUnavailable(
                f"{free // (1024 * 1024)} MB free where hive.sqlite lives, under the {self._floor // (1024 * 1024)} "
                f"MB kept for the operator and the daemon (--min-free-mb): {agent}'s send is refused, nothing stored")
