"""The operator's messages: send (F5: to any agent), the inbox, mark read."""

from __future__ import annotations

from typing import Any

import pykka

from hyperhive.actors.bridge import Handle
from hyperhive.actors.broker import Broker
from hyperhive.actors.broker_core import check_idempotency_key
from hyperhive.names import OPERATOR
from hyperhive.web.operator import counts
from hyperhive.web.operator.checks import check_body, check_limit, check_recipient, more_of
from hyperhive.web.tables.sends import SendBatcher, sent_reply

__all__ = ["inbox", "mark_read", "send"]


async def send(sends: SendBatcher, to: object, body: object, idempotency_key: object = None) -> dict[str, Any]:
    """``{"message_id"}`` once the message is committed; a retry with the same
    ``idempotency_key`` gets the original's id and ``"duplicate": true``."""
    recipient = check_recipient(to)
    text = check_body(body)
    key = check_idempotency_key(idempotency_key)
    return sent_reply(await sends.send(OPERATOR, recipient, text, key))


async def inbox(broker: pykka.ActorProxy[Broker], limit: object = 50) -> dict[str, Any]:
    """The newest ``limit`` messages to the operator, oldest first (about 1 MiB
    at most), all marked read: ``{"messages", "more"}``."""
    want = check_limit(limit)
    b = Handle(broker)
    rows, truncated = await b.ask(Broker.recent_page, OPERATOR, want)
    await b.ask(Broker.mark_read, OPERATOR)
    # Fewer rows than asked and none cut for size: nothing older was left out.
    cut = truncated or len(rows) >= want
    more = more_of(await counts.messages_to(OPERATOR), len(rows)) if cut else 0
    return {"messages": [r.to_wire() for r in rows], "more": more}


async def mark_read(broker: pykka.ActorProxy[Broker]) -> dict[str, Any]:
    """Mark every unread message to the operator read: ``{"marked": n}``."""
    return {"marked": await Handle(broker).ask(Broker.mark_read, OPERATOR)}
