"""The IOLoop as every actor's clock: no timer threads.

Capture the loop on its own thread; ``IOLoop.current()`` in an actor thread
is a different loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pykka
from tornado.ioloop import IOLoop

import hyperhive.logs as logs

__all__ = ["LoopClock"]

_log = logs.get("hyperhive.clock")


class LoopClock:
    def __init__(self, io_loop: IOLoop) -> None:
        self._loop = io_loop

    @property
    def io_loop(self) -> IOLoop:
        return self._loop

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop after ``delay`` seconds (thread-safe).

        ``fn`` should only tell an actor; a dead actor is not an error here.
        """
        self._loop.add_callback(self._loop.call_later, max(0.0, delay), _guarded, fn, *args)

    def add_callback(self, fn: Callable[..., Any], *args: Any) -> None:
        self._loop.add_callback(fn, *args)


def _guarded(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except pykka.ActorDeadError:
        pass
    except Exception:  # noqa: BLE001 - a timer must never take the loop down
        _log.exception("clock.callback_failed")
