"""Driving one request's coroutine by hand, without an asyncio Task (``Op.inline``).

A Task costs its creation, its registration, a loop turn before its first
step and another for its done callbacks. ``InlineRun`` does what a Task does
for a coroutine that awaits only futures (asyncio's own, a Lock's, an
Event's, a sleep): the first step runs at once, a future it waits on resumes
it from its done callback, a bare yield goes round the loop once. There is
no current task while it runs: an op that needs one (``asyncio.timeout``,
``current_task``) must not be inline.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from typing import Any

import hyperhive.logs as logs

__all__ = ["InlineRun"]

_log = logs.get("hyperhive.socket")


class InlineRun:
    """``start`` it once; ``done(self)`` is called when the coroutine is over
    (returned, cancelled or failed), before any exception it raises is
    passed on (only BaseExceptions: a failure is logged)."""

    __slots__ = ("_coro", "_done", "_ctx", "_waiting", "_cancel")

    def __init__(self, coro: Coroutine[Any, Any, None], done: Callable[[InlineRun], None]) -> None:
        self._coro = coro
        self._done = done
        self._ctx = contextvars.copy_context()  # its own, as a Task's: its bindings tag only its lines
        self._waiting: asyncio.Future[Any] | None = None
        self._cancel = False

    def start(self) -> None:
        self._ctx.run(self._step, None)

    def cancel(self) -> None:
        """As ``Task.cancel``: the awaited future is cancelled (the coroutine
        sees CancelledError there), or the next resumption throws it."""
        if self._waiting is None or not self._waiting.cancel():
            self._cancel = True

    def _step(self, exc: BaseException | None) -> None:
        try:
            yielded = self._coro.send(None) if exc is None else self._coro.throw(exc)
        except (StopIteration, asyncio.CancelledError):
            self._done(self)
            return
        except Exception:  # noqa: BLE001 - the coroutine answers its own failures; this is a bug, logged
            self._done(self)
            _log.exception("socket.request_failed")
            return
        except BaseException:
            self._done(self)
            raise
        if yielded is None:  # a bare yield (asyncio.sleep(0)): go round the loop once
            asyncio.get_running_loop().call_soon(self._wake, None, context=self._ctx)
        elif getattr(yielded, "_asyncio_future_blocking", False):
            yielded._asyncio_future_blocking = False  # taken, as a Task takes it
            self._waiting = yielded
            yielded.add_done_callback(self._wake, context=self._ctx)
        else:
            self._step(RuntimeError(f"an inline op awaited {yielded!r}, not a future"))

    def _wake(self, _: object) -> None:
        self._waiting = None
        cancel, self._cancel = self._cancel, False
        self._step(asyncio.CancelledError() if cancel else None)
