"""`hive mcp --socket PATH`: the agent's tools as a stdio MCP server (F28).

Each tool is one request on the agent's own unix socket; the daemon knows the
caller by that socket. Tool results are JSON text, readable by a model and
parseable by a program alike.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from hyperhive.client import AsyncClient
from hyperhive.errors import HiveError

__all__ = ["build_server", "run"]

RECV_CAP = 180


def build_server(socket_path: str) -> MCPServer:
    client = AsyncClient(socket_path)
    server = MCPServer(
        "hyperhive",
        version="0.1.0",
        instructions=(
            "Tools to talk to the other agents of this hive and to the operator. "
            "When you have nothing else useful to do, call recv with wait_seconds=180 "
            "to wait for work instead of sleeping."
        ),
    )

    async def rpc(op: str, **fields: Any) -> dict[str, Any]:
        try:
            return await client.request(op, **fields)
        except HiveError as exc:
            raise ToolError(f"{exc.code}: {exc.message}") from None

    @server.tool(structured_output=False)
    async def send(
        to: Annotated[str, Field(description="recipient: an agent name, or 'operator' for the human")],
        body: Annotated[str, Field(description="the message text")],
    ) -> str:
        """Send a durable message to another agent or to the operator."""
        resp = await rpc("send", to=to, body=body)
        return json.dumps({"sent": True, "message_id": resp["message_id"], "to": to})

    @server.tool(structured_output=False)
    async def recv(
        wait_seconds: Annotated[
            int | None,
            Field(ge=0, description=(
                f"seconds to wait for a message if none is waiting (default 30; the daemon "
                f"caps it at {RECV_CAP}). Returns at once when a message arrives.")),
        ] = None,
    ) -> str:
        """Receive your oldest undelivered messages; waits for one if there are none."""
        resp = await rpc("recv", wait_seconds=wait_seconds)
        return json.dumps({"messages": resp["messages"]}, ensure_ascii=False)

    @server.tool(structured_output=False)
    async def recent(
        limit: Annotated[int, Field(ge=1, le=500, description="how many rows")] = 20,
    ) -> str:
        """Your last inbox rows, delivered or not, oldest first."""
        resp = await rpc("recent", limit=limit)
        return json.dumps({"messages": resp["messages"]}, ensure_ascii=False)

    return server


def run(socket_path: str) -> None:
    build_server(socket_path).run()
