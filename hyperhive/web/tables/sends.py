"""Sends from every socket, gathered on the IOLoop and handed to the Broker as
one message per loop turn (a send that finds no batch of ours at the Broker
goes at once: there is nothing to gather it with, and a loop turn less on a
wake's path).

A tell and a cross-thread future per send cost more daemon CPU than the
commit itself; with ``send_many`` the sends parsed in one loop turn cross to
the Broker once and come back once.

A send may carry an idempotency key (issue 16): a retry with the same key is
answered with the original id, a ``Duplicate`` (``sent_reply`` flags it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
from typing import Any

import pykka

import hyperhive.logs as logs
from hyperhive.actors.bridge import Handle
from hyperhive.actors.broker import Broker, Duplicate
from hyperhive.actors.broker_core import check_idempotency_key
from hyperhive.actors.handoff import to_loop
from hyperhive.errors import BadRequest, HiveError, Internal, Unavailable
from hyperhive.wire import check_text

__all__ = ["SendBatcher", "sent_reply"]

_log = logs.get("hyperhive.sends")

_Item = tuple[str, str, str, str | None, "asyncio.Future[int]"]
REPLY_TIMEOUT = 30.0


class SendBatcher:
    """Lives on the IOLoop thread; ``send`` is its only entry point."""

    def __init__(self, broker: pykka.ActorProxy[Broker]) -> None:
        self._broker = Handle(broker)
        self._items: list[_Item] = []
        self._scheduled = False
        self._in_flight = 0  # batches told to the Broker and not answered yet

    async def send(self, sender: str, to: str, body: str, idempotency_key: str | None = None) -> int:
        """Store one message; returns its id once it is committed (or fails
        with Unavailable after ``REPLY_TIMEOUT``, one timer per batch). A retry
        of a send stored under the same ``idempotency_key`` by the same sender
        stores nothing and returns the original id, as a ``Duplicate``.

        A body no store can take (not a str, a lone surrogate) or a bad key is
        refused here, for this caller alone, before it joins a batch; a row the
        store still refuses fails alone too (the Broker retries a refused batch
        row by row).
        """
        if not isinstance(body, str):
            raise BadRequest("body must be a string")
        check_text(body, "the message body")
        key = check_idempotency_key(idempotency_key)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        self._items.append((sender, to, body, key, fut))
        if self._in_flight == 0 and not self._scheduled:  # the Broker has none of ours: go now
            self._flush(loop)
        elif not self._scheduled:  # the sends of this loop turn go together, as the Broker's next commit
            self._scheduled = True
            loop.call_soon(self._flush, loop)
        return await fut

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        items = [i for i in self._items if not i[4].done()]  # a cancelled caller sends nothing
        self._items = []
        self._scheduled = False
        if not items:
            return
        self._in_flight += 1
        # A Broker already gone fails the reply at once (Unavailable): _deliver settles every caller.
        reply = self._broker.future(Broker.send_many, [(s, t, b, k) for s, t, b, k, _ in items])
        # A guard, not a deadline: the Broker always answers unless it is gone.
        fired: list[bool] = []
        guard = loop.call_later(REPLY_TIMEOUT, self._answered, items, None, fired)
        # One hand-over with the commit's other replies (handoff): the wake it did comes first.
        reply.add_done_callback(lambda f: to_loop(loop, self._answered, items, f, fired, guard))

    def _answered(self, items: list[_Item], reply: cf.Future[list[int | HiveError]] | None, fired: list[bool],
                  guard: asyncio.TimerHandle | None = None) -> None:
        """The Broker's reply (``reply``), or the guard that fired first (None): once per batch."""
        if fired:
            return
        fired.append(True)
        self._in_flight -= 1
        if reply is None:
            _settle(items, Unavailable(f"no reply within {REPLY_TIMEOUT:g}s"))
            return
        if guard is not None:
            guard.cancel()
        _deliver(items, reply)


def _deliver(items: list[_Item], reply: cf.Future[list[int | HiveError]]) -> None:
    try:
        results = reply.result()
    except Exception as exc:  # noqa: BLE001 - every caller must hear of it
        _log.exception("sends.batch_failed", count=len(items))
        err = exc if isinstance(exc, HiveError) else Internal(f"send failed: {exc}")
        _settle(items, err)
        return
    for (*_, fut), result in zip(items, results, strict=True):
        if fut.done():
            continue
        if isinstance(result, BaseException):
            fut.set_exception(result)
        else:
            fut.set_result(result)


def _settle(items: list[_Item], err: BaseException) -> None:
    for *_, fut in items:
        if not fut.done():
            fut.set_exception(err)


def sent_reply(message_id: int) -> dict[str, Any]:
    """A send's reply: ``{"message_id"}``, with ``"duplicate": true`` when it
    was a retry answered with the original's id (nothing new stored)."""
    if isinstance(message_id, Duplicate):
        return {"message_id": int(message_id), "duplicate": True}
    return {"message_id": message_id}
