"""The admin socket's ``journal`` op (F23), kept apart so admin_ops merges it
with ``ops.update(journal_ops(coordinator, backend))``."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from hyperhive.actors.bridge import call
from hyperhive.journal import check_journal_request
from hyperhive.names import AgentName
from hyperhive.web.rpc.jsonlines import Op
from hyperhive.wire import Journal

__all__ = ["JournalSource", "journal_ops"]


class JournalSource(Protocol):
    """What a backend offers: LocalBackend reads harness.log, NixosBackend runs journalctl."""

    def journal(self, name: AgentName, unit: str, lines: int) -> str: ...


def journal_ops(coordinator: Any, backend: JournalSource) -> dict[str, Op]:
    async def journal(req: Journal) -> dict[str, Any]:
        # The name is checked against the live containers before anything runs.
        live = {s["name"] for s in await call(coordinator.ls)}
        name, unit, lines = check_journal_request(req.name, req.unit, req.lines, live)
        # A file read or a journalctl run: off the IOLoop.
        text = await asyncio.get_running_loop().run_in_executor(None, backend.journal, name, unit, lines)
        return {"name": name, "unit": unit, "lines": lines, "text": text}

    return {"journal": Op(journal)}
