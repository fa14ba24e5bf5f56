"""Handing work from an actor's thread to the IOLoop: once per message, not once per reply.

Every ``call_soon_threadsafe`` writes to the loop's self-pipe, and that write
releases the GIL: the loop thread wakes, takes it, and the actor thread waits
to get it back before it can go on. A group commit that completed each reply
on its own (each send's ack, the recv it woke, a timer) paid that hand-over
once per reply; measured on the wake path, each cost ~0.1 ms of the actor's
time while the loop ran.

``to_loop(loop, fn, *args)`` runs ``fn(*args)`` on ``loop``. Inside
``one_handoff()`` (on the actor's thread) it only queues; the queue goes to
each loop in one hand-over when the block ends, in order. The block's end
should be the last thing the actor does for that message, so the loop runs
while the actor waits for its next one.

``loop_future(fut, loop)`` is ``asyncio.wrap_future`` through ``to_loop``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import hyperhive.logs as logs

__all__ = ["loop_future", "one_handoff", "to_loop"]

_log = logs.get("hyperhive.handoff")

T = TypeVar("T")
_Item = tuple[Callable[..., Any], tuple[Any, ...]]


class _Queued(threading.local):
    by_loop: dict[asyncio.AbstractEventLoop, list[_Item]] | None = None


_queued = _Queued()


def to_loop(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn(*args)`` on ``loop`` (from any thread); queued inside ``one_handoff``.
    A loop already closed runs nothing: nobody is left to hear of it."""
    queued = _queued.by_loop
    if queued is not None:
        queued.setdefault(loop, []).append((fn, args))
        return
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the loop is closed: the daemon is stopping
        pass


@contextmanager
def one_handoff() -> Iterator[None]:
    """Gather this thread's ``to_loop`` calls and hand them over when the block
    ends, one wake-up per loop. Nested blocks hand over at the outermost end."""
    if _queued.by_loop is not None:
        yield
        return
    _queued.by_loop = {}
    try:
        yield
    finally:
        queued, _queued.by_loop = _queued.by_loop, None
        for loop, items in queued.items():
            try:
                loop.call_soon_threadsafe(_run_all, items)
            except RuntimeError:
                pass


def _run_all(items: list[_Item]) -> None:
    for fn, args in items:
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - one callback never skips the others
            _log.exception("handoff.callback_failed", callback=getattr(fn, "__qualname__", repr(fn)))


def loop_future(fut: cf.Future[T], loop: asyncio.AbstractEventLoop) -> asyncio.Future[T]:
    """An asyncio future on ``loop`` that settles as ``fut`` does (its result,
    its error, or cancelled). Cancelling it cancels nothing of ``fut``: the
    caller decides what a cancelled wait means for the actor's work."""
    out: asyncio.Future[T] = loop.create_future()
    fut.add_done_callback(lambda f: to_loop(loop, _settle, f, out))
    return out


def _settle(src: cf.Future[T], out: asyncio.Future[T]) -> None:
    if out.done():
        return
    if src.cancelled():
        out.cancel()
        return
    exc = src.exception()
    if exc is not None:
        out.set_exception(exc)
    else:
        out.set_result(src.result())
