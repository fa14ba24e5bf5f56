"""`hive mcp --socket PATH`: the agent's tools as a stdio MCP server (F28).

Each tool is one request on the agent's own unix socket; the daemon knows the
caller by that socket. Tool results are JSON text, readable by a model and
parseable by a program alike.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from hyperhive import client
from hyperhive.client import AsyncClient
from hyperhive.errors import HiveError

__all__ = ["build_server", "run"]

RECV_CAP = 180


def build_server(socket_path: str, manager: bool = False) -> MCPServer:
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
        """Your last inbox rows, delivered or not, oldest first (``truncated``: older
        rows were left out to keep the answer under about 1 MiB)."""
        resp = await rpc("recent", limit=limit)
        return json.dumps({"messages": resp["messages"], "truncated": bool(resp.get("truncated", False))},
                          ensure_ascii=False)

    if manager:
        _manager_tools(server, rpc)
    return server


def _manager_tools(server: MCPServer, rpc: Any) -> None:
    """F28: the manager's extra tools. The daemon refuses them on any other socket too."""

    @server.tool(structured_output=False)
    async def ask_operator(
        question: Annotated[str, Field(description="the question for the human operator")],
        options: Annotated[list[str] | None, Field(description="choices shown as radio buttons "
                                                   "(or checkboxes with multi); free text is always allowed")] = None,
        multi: Annotated[bool, Field(description="allow several options")] = False,
        ttl_seconds: Annotated[int | None, Field(gt=0, description="expire unanswered after this long")] = None,
        # Plain `str` params (empty = not given): the SDK JSON-parses strings given
        # to any other type, so a default of "false" or "[1]" would not survive.
        default: Annotated[str, Field(description="the answer if it expires (needs ttl_seconds); "
                                      "empty: an expiry answers [expired]")] = "",
    ) -> str:
        """Queue a question for the operator; returns its id at once. The answer arrives
        later in your inbox as an OperatorAnswered event (how: answered|cancelled|expired)."""
        resp = await rpc("ask_operator", question=question, options=options or [], multi=multi,
                         ttl_seconds=ttl_seconds, default=default or None)
        return json.dumps({"question_id": resp["question_id"], "status": "queued"})

    @server.tool(structured_output=False)
    async def request_spawn(
        name: Annotated[str, Field(description="the new agent's name (^[a-z][a-z0-9-]{0,30}$)")],
        prompt: Annotated[str, Field(description="its initial prompt (prompt.md); empty: a default")] = "",
        allowed_recipients: Annotated[list[str] | None, Field(description="whom it may message "
                                                              "(default: anyone)")] = None,
    ) -> str:
        """Ask the operator to approve a new agent. The outcome arrives as ApprovalResolved."""
        resp = await rpc("request_spawn", name=name, prompt=prompt or None, allowed_recipients=allowed_recipients)
        return json.dumps({"approval_id": resp["approval_id"], "status": "pending"})

    @server.tool(structured_output=False)
    async def request_apply_commit(
        agent: Annotated[str, Field(description="the agent whose config repo holds the commit")],
        commit: Annotated[str, Field(description="the commit id in agents/<agent>/config")],
    ) -> str:
        """Ask the operator to apply a commit of an agent's config (rebuilds its container)."""
        resp = await rpc("request_apply_commit", agent=agent, commit=commit)
        return json.dumps({"approval_id": resp["approval_id"], "status": "pending"})

    @server.tool(structured_output=False)
    async def propose_config(
        agent: Annotated[str, Field(description="the agent whose config changes")],
        message: Annotated[str, Field(description="why: the commit message the operator reads")],
        prompt: Annotated[str, Field(description="its new prompt (prompt.md), whole; empty: unchanged")] = "",
        agent_json: Annotated[dict[str, Any] | None, Field(description="its new agent.json, whole, as an "
                                                           "object: driver, allowed_recipients, allowed_tools")] = None,
    ) -> str:
        """Commit a new prompt and/or agent.json to an agent's config repo and ask the
        operator to apply it (the container is rebuilt on approval). The outcome
        arrives as ApprovalResolved."""
        resp = await rpc("propose_config", agent=agent, message=message, prompt=prompt or None,
                         agent_json=None if agent_json is None else json.dumps(agent_json))
        return json.dumps({"commit": resp["commit"], "approval_id": resp["approval_id"], "status": "pending"})

    for verb, doc in (("start", "Start an agent's container (then it is kicked)."),
                      ("restart", "Restart an agent's container (then it is kicked)."),
                      ("kill", "Kill an agent's container at once; it stays stopped.")):
        server.tool(name=verb, description=doc, structured_output=False)(_lifecycle(rpc, verb))


def _lifecycle(rpc: Any, verb: str) -> Any:
    async def act(name: Annotated[str, Field(description="the agent (never yourself)")]) -> str:
        resp = await rpc(verb, name=name)
        c = resp["container"]
        return json.dumps({"name": c["name"], "state": c["state"]})
    return act


def _role(socket_path: str) -> str:
    """Ask the daemon who this socket is: the manager gets more tools."""
    return str(client.request(Path(socket_path), "ping", timeout=30).get("role", "agent"))


def run(socket_path: str) -> None:
    build_server(socket_path, manager=_role(socket_path) == "manager").run()
