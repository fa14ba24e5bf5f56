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
    """Each turn inside a slot; the ``dict`` it yields takes the turn's report
    (``cost_usd``: the CLI's own figure, issue 15), sent with ``turn_done``."""

    async def give_back(report: dict[str, Any] | None = None) -> None:
        cost = (report or {}).get("cost_usd")
        try:
            await client.request("turn_done", **({"cost_usd": float(cost)} if isinstance(cost, int | float)
                                                 and not isinstance(cost, bool) and 0 <= cost <= 1e6 else {}))
        except HiveError as exc:  # the daemon frees it anyway when this harness stops
            _log.warning("slot.release_failed", code=exc.code, error=exc.message)

    @asynccontextmanager
    async def slot(kind: str) -> AsyncIterator[dict[str, Any]]:
        try:
            await client.request("turn_slot", kind=kind)
        except asyncio.CancelledError:
            # Withdraw from the queue, or give back a grant that raced the cancel.
            asyncio.ensure_future(give_back())
            raise
        report: dict[str, Any] = {}
        try:
            yield report
        finally:
            await asyncio.shield(give_back(report))

    return slot
