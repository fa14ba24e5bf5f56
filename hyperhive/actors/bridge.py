"""Crossing between Tornado coroutines and pykka actors without blocking either.

The caller makes a ``concurrent.futures.Future``, tells the actor (``defer``),
and awaits the future through ``asyncio.wrap_future``. The actor claims the
future with ``set_running_or_notify_cancel()`` before it commits to anything,
so a caller that already gave up never swallows a message.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
from collections.abc import Callable
from typing import Any, TypeVar

import pykka

from hyperhive.errors import HiveError, Unavailable

__all__ = ["Reply", "call", "claim", "fail", "resolve"]

T = TypeVar("T")
Reply = cf.Future


def claim(fut: Reply | None) -> bool:
    """Claim a reply future before acting on it; False if the caller gave up."""
    if fut is None:
        return True
    if fut.done():
        return False
    try:
        return fut.set_running_or_notify_cancel()
    except RuntimeError:  # already running: claimed once before
        return False


def resolve(fut: Reply | None, value: Any = None) -> None:
    """Complete a claimed future (no-op when there is no caller)."""
    if fut is not None and not fut.done():
        fut.set_result(value)


def fail(fut: Reply | None, exc: BaseException) -> None:
    if fut is not None and not fut.done():
        if not fut.running():
            fut.set_running_or_notify_cancel()
        if not fut.done():
            fut.set_exception(exc)


def answer(fut: Reply | None, fn: Callable[[], T]) -> None:
    """Claim ``fut``, run ``fn`` and complete it with the result or the error."""
    if not claim(fut):
        return
    try:
        resolve(fut, fn())
    except HiveError as exc:
        fail(fut, exc)
    except Exception as exc:  # noqa: BLE001 - the caller gets it; the actor lives
        fail(fut, exc)


async def call(
    method: Any,
    *args: Any,
    timeout: float = 30.0,
    on_orphan: Callable[[Any], None] | None = None,
    **kwargs: Any,
) -> Any:
    """Tell ``method`` (a pykka proxy method) with a reply future and await it.

    ``on_orphan(result)`` runs if the actor produced a result the caller can
    no longer take (timeout or cancellation raced its completion): the recv
    path uses it to put messages back.
    """
    fut: Reply = cf.Future()
    try:
        method.defer(*args, reply=fut, **kwargs)
    except pykka.ActorDeadError:
        raise Unavailable("the daemon is shutting down") from None
    try:
        # asyncio.timeout, not wait_for: wait_for wraps the await in a new task.
        async with asyncio.timeout(timeout):
            return await asyncio.wrap_future(fut)
    except TimeoutError:
        _rescue(fut, on_orphan)
        raise Unavailable(f"no reply within {timeout:g}s") from None
    except asyncio.CancelledError:
        _rescue(fut, on_orphan)
        raise


def _rescue(fut: Reply, on_orphan: Callable[[Any], None] | None) -> None:
    fut.cancel()
    if on_orphan is None:
        return

    def done(f: Reply) -> None:
        if not f.cancelled() and f.exception() is None:
            on_orphan(f.result())

    fut.add_done_callback(done)
