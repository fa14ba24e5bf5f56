"""The daemon's side of a hibernating agent's web UI (issue 17): who sleeps,
its inbox from the Broker, its history from its events db (``events_probe``,
off the loop, once per nap: nothing writes it while the agent sleeps), and the
wake a note asks for. ``sandbox.web_asleep`` answers the requests."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from hyperhive.actors.bridge import Handle
from hyperhive.actors.broker import Broker
from hyperhive.actors.naps import Naps
from hyperhive.actors.refs import BrokerRef
from hyperhive.events_probe import read_history
from hyperhive.harness.web import INBOX_LIMIT  # as the harness's own page shows
from hyperhive.names import AgentName
from hyperhive.paths import StatePaths
from hyperhive.sandbox.web_asleep import Asleep

__all__ = ["SleepingUIs"]


class SleepingUIs:
    """``self(name)``: the agent as its UI port shows it while it hibernates, or None."""

    def __init__(self, naps: Naps, broker: BrokerRef, paths: StatePaths, default_driver: str) -> None:
        self._naps = naps
        self._broker = broker
        self._paths = paths
        self._driver = default_driver
        self._lock = threading.Lock()
        self._history: dict[str, tuple[int, asyncio.Future[list[dict[str, Any]]]]] = {}

    def __call__(self, name: str) -> Asleep | None:
        nap = self._naps.nap(name)
        if nap is None:
            return None
        try:
            driver = self._paths.load_applied(AgentName(name)).driver or self._driver
        except Exception:  # noqa: BLE001 - the page shows the default then
            driver = self._driver

        async def inbox() -> list[dict[str, Any]]:
            rows, _ = await Handle(self._broker).ask(Broker.recent_page, name, INBOX_LIMIT)
            return [r.to_wire() for r in rows]

        async def history() -> list[dict[str, Any]]:
            return await self._read(name, nap)

        return Asleep(name, driver, inbox, history, lambda: self._naps.wake_named(name))

    async def _read(self, name: str, nap: int) -> list[dict[str, Any]]:
        """The history of this nap: read once, shared by every request while it lasts."""
        with self._lock:
            kept = self._history.get(name)
            if kept is None or kept[0] != nap:
                fut = asyncio.get_running_loop().run_in_executor(None, read_history, self._paths.state(AgentName(name)))
                self._history[name] = kept = (nap, fut)
        return list(await asyncio.shield(kept[1]))
