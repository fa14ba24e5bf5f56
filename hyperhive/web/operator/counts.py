"""How many rows there are behind a listing, for its ``more``.

The actors' listings are tails (the newest ``limit`` messages, the latest 20
resolved questions or decided approvals) and do not say how many they left
out. A COUNT on the store answers that: read-only, on an executor thread
(its own sqlite connection, WAL: it never waits for the actors' writers),
as the dashboard seeds its message flow.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from hyperhive.store.models import Approval, Message, Question

__all__ = ["decided_approvals", "messages_to", "resolved_questions"]


async def _off_loop(count: Callable[[], int]) -> int:
    return await asyncio.get_running_loop().run_in_executor(None, count)


async def messages_to(recipient: str) -> int:
    """Every message to ``recipient`` the store holds, read or not."""
    return await _off_loop(lambda: int(Message.select().where(Message.recipient == recipient).count()))


async def resolved_questions() -> int:
    return await _off_loop(lambda: int(Question.select().where(Question.how.is_null(False)).count()))


async def decided_approvals() -> int:
    return await _off_loop(lambda: int(Approval.select().where(Approval.status != "pending").count()))
