"""The admin socket's ``journal`` op (F23), kept apart so the daemon merges it
with ``{**admin_ops(...), **journal_ops(coordinator, backend)}``; an adapter
over the operator service (``operator.agents.journal``)."""

from __future__ import annotations

from typing import Any

from hyperhive.actors.refs import CoordinatorRef
from hyperhive.web.operator import agents
from hyperhive.web.operator.agents import JournalSource
from hyperhive.web.rpc.jsonlines import Op
from hyperhive.wire import Journal

__all__ = ["JournalSource", "journal_ops"]


def journal_ops(coordinator: CoordinatorRef, backend: JournalSource) -> dict[str, Op]:
    async def journal(req: Journal) -> dict[str, Any]:
        return await agents.journal(coordinator, backend, req.name, req.unit, req.lines)

    return {"journal": Op(journal)}
