"""The harness's side of F44: each turn holds a slot granted by the daemon."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import hyperhive.logs as logs
from hyperhive.errors import HiveError

__all__ = ["daemon_slot"]

_log = logs.get("hyperhive.harness.slots")


def daemon_slot(client: Any) -> Callable[[str], AbstractAsyncContextManager[Any]]:
    async def give_back() -> None:
        try:
            await client.request("turn_done")
        except HiveError as exc:  # the daemon frees it anyway when this harness stops
            _log.warning("slot.release_failed", code=exc.code, error=exc.message)

    @asynccontextmanager
    async def slot(kind: str) -> AsyncIterator[None]:
        try:
            await client.request("turn_slot", kind=kind)
        except asyncio.CancelledError:
            # Withdraw from the queue, or give back a grant that raced the cancel.
            asyncio.ensure_future(give_back())
            raise
        try:
            yield
        finally:
            await asyncio.shield(give_back())

    return slot
