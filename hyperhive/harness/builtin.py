"""The built-in offline driver: a hive that works with no model account.

It answers each message with a reply to its sender that quotes it, and obeys
a plain ``send <agent> <text>``. It acts through its MCP tools, over a real
MCP client session to `hive mcp`, the same path Claude Code takes.
"""

from __future__ import annotations

import json
import sys
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from hyperhive.names import SYSTEM
from hyperhive.wire import InboxRow

__all__ = ["Action", "BuiltinDriver", "plan"]

REPLY_MARK = "[builtin reply from "
TOOL_SEND = "mcp__hyperhive__send"  # the name Claude Code gives the same tool
QUOTE_MAX = 200


@dataclass(frozen=True)
class Action:
    to: str
    body: str
    then_confirm_to: str | None = None  # whom to tell how the send went


def _quote(body: str) -> str:
    one_line = " ".join(body.split())
    return one_line if len(one_line) <= QUOTE_MAX else one_line[: QUOTE_MAX - 1] + "…"


def plan(me: str, msg: InboxRow) -> list[Action]:
    """What the builtin driver does with one message (pure).

    Never answers `system` (kicks, helper events) nor another builtin reply,
    so two builtin agents cannot ping-pong forever.
    """
    if msg.from_ == SYSTEM or msg.body.startswith(REPLY_MARK):
        return []
    mark = f"{REPLY_MARK}{me}]"
    words = msg.body.split(None, 2)
    if len(words) == 3 and words[0] == "send":
        return [Action(to=words[1], body=words[2], then_confirm_to=msg.from_)]
    return [Action(to=msg.from_, body=f'{mark} you said: "{_quote(msg.body)}"')]


class BuiltinDriver:
    name = "builtin"

    def __init__(self, me: str, socket_path: str) -> None:
        self.me = me
        self.socket_path = socket_path
        self._stack = AsyncExitStack()
        self.session: ClientSession | None = None
        self._calls = 0

    async def open(self) -> None:
        params = StdioServerParameters(
            command=sys.executable, args=["-m", "hyperhive", "mcp", "--socket", self.socket_path],
        )
        read, write = await self._stack.enter_async_context(stdio_client(params))
        self.session = await self._stack.enter_async_context(ClientSession(read, write))
        await self.session.initialize()

    async def close(self) -> None:
        await self._stack.aclose()

    async def turn(self, messages: list[InboxRow], emit: Any) -> None:
        assert self.session is not None
        for msg in messages:
            for action in plan(self.me, msg):
                # The same event shapes as the claude driver's, so the agent's page shows them alike.
                self._calls += 1
                use_id = f"builtin_{self._calls}"
                args = {"to": action.to, "body": action.body}
                emit("tool_use", id=use_id, name=TOOL_SEND, input=args)
                result = await self.session.call_tool("send", args)
                text = "".join(getattr(c, "text", "") for c in result.content)
                emit("tool_result", tool_use_id=use_id, content=text, is_error=bool(result.is_error))
                if action.then_confirm_to and action.then_confirm_to != SYSTEM:
                    outcome = "could not send: " + text if result.is_error else f"sent to {action.to}"
                    body = f"{REPLY_MARK}{self.me}] {outcome}"
                    await self.session.call_tool("send", {"to": action.then_confirm_to, "body": body})
        emit("text", text=json.dumps({"handled": len(messages)}))
