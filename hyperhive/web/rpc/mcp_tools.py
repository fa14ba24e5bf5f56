"""The agent's MCP tools, served by the daemon itself on ``run/mcp.sock`` (F28, issue 17).

What the CLI launches is `hive mcp` (``hyperhive/mcp_pipe.py``): a pipe from
its stdio to this socket that imports no SDK, so a turn pays no start of the
``mcp`` package; the package is loaded once, here. Each tool is one of the
agent's own ops (``agent_ops``), run in-process as that agent: the connection
is the identity (``CALLER``, set per connection by ``mcp_sockets``), as the
agent's JSON-lines socket is; and, as there, an argument a tool does not
declare (a "from") is refused, nothing done (``mcp_strict``). Tool results
are JSON text, readable by a model and parseable by a program alike. Tools
whose parameters are all strings are declared in a table (``_STR_TOOLS``) and
built by one helper.

Each ``send`` tool call is one idempotency key (issue 16): the pipe puts one in
the call's ``_meta`` (``KEY_META``) and, when the daemon went away before the
answer, sends the call again with it; the daemon stores it once and answers
the retry with the original ``message_id``. A call without one gets a key
made here.

Four servers are built once per daemon: agent or manager, with or without the
CLI's permission prompt tool (a pipe started for an "ask" mode CLI says so in
its first line).
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from hyperhive.errors import HiveError
from hyperhive.settings import Settings
from hyperhive.web.rpc.jsonlines import Op
from hyperhive.web.rpc.mcp_strict import StrictServer
from hyperhive.wire import check_value
from hyperhive.wire_requests import build, new_idempotency_key

__all__ = ["CALLER", "KEY_META", "Caller", "Servers", "build_server"]

KEY_META = "hyperhive/idempotency_key"  # in a tools/call's params._meta: the send's key, made by the pipe


@dataclass
class Caller:
    """The agent one MCP connection speaks as, and what its replies carry that must
    not be lost: a recv's messages, by request id, until the reply is written."""

    agent: str
    ops: dict[str, Op]
    unsent: dict[Any, Callable[[], None]] = field(default_factory=dict)


CALLER: ContextVar[Caller] = ContextVar("hyperhive_mcp_caller")


async def _run(op: str, fields: dict[str, Any]) -> dict[str, Any]:
    """One of the caller's ops, in-process: the same checks as on its socket."""
    ops = CALLER.get().ops
    if op not in ops:
        raise ToolError(f"unknown_op: {op!r} is not served here")
    try:
        check_value(fields)  # lone surrogates, depth, integers past 64 bits: as the wire refuses them
        return await ops[op].run(build(op, fields))
    except HiveError as exc:
        raise ToolError(f"{exc.code}: {exc.message}") from None


async def rpc(op: str, **fields: Any) -> dict[str, Any]:
    return await _run(op, fields)


Rpc = Callable[..., Awaitable[dict[str, Any]]]
Answer = Callable[[dict[str, str], dict[str, Any]], dict[str, Any]]  # (arguments, reply) → the tool's JSON


@dataclass(frozen=True)
class _StrTool:
    """A tool of string parameters (all required): one request, an answer built from it."""

    doc: str
    params: dict[str, str]  # name → description
    answer: Answer
    manager: bool = False  # only on the manager's socket


def _container(args: dict[str, str], resp: dict[str, Any]) -> dict[str, Any]:
    return {"name": resp["container"]["name"], "state": resp["container"]["state"]}


_NAME = {"name": "the agent (never yourself)"}
_STR_TOOLS: dict[str, _StrTool] = {
    "request_apply_commit": _StrTool(
        "Ask the operator to apply a commit of an agent's config (rebuilds its container).",
        {"agent": "the agent whose config repo holds the commit", "commit": "the commit id in agents/<agent>/config"},
        lambda args, resp: {"approval_id": resp["approval_id"], "status": "pending"}, manager=True),
    "start": _StrTool("Start an agent's container (then it is kicked).", _NAME, _container, manager=True),
    "restart": _StrTool("Restart an agent's container (then it is kicked).", _NAME, _container, manager=True),
    "kill": _StrTool("Kill an agent's container at once; it stays stopped.", _NAME, _container, manager=True),
}


def _send_tool(server: MCPServer) -> None:
    @server.tool(structured_output=False)
    async def send(
        ctx: Context,
        to: Annotated[str, Field(description="recipient: an agent name, or 'operator' for the human")],
        body: Annotated[str, Field(description="the message text")],
    ) -> str:
        """Send a durable message to another agent or to the operator."""
        meta = ctx.request_context.meta or {}
        key = meta.get(KEY_META)
        resp = await rpc("send", to=to, body=body,
                         idempotency_key=key if isinstance(key, str) else new_idempotency_key("mcp"))
        out = {"sent": True, "message_id": resp["message_id"], "to": to}
        return json.dumps(out | ({"duplicate": True} if resp.get("duplicate") else {}), ensure_ascii=False)


def _add_str_tool(server: MCPServer, rpc: Rpc, name: str, tool: _StrTool) -> None:
    async def act(**args: str) -> str:
        return json.dumps(tool.answer(args, await rpc(name, **args)), ensure_ascii=False)

    act.__name__ = act.__qualname__ = name
    # The SDK reads the parameters (and their descriptions) from the signature.
    setattr(act, "__signature__", inspect.Signature(  # noqa: B010 - a function has no typed __signature__
        [inspect.Parameter(p, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[str, Field(description=d)])
         for p, d in tool.params.items()], return_annotation=str))
    server.tool(name=name, description=tool.doc, structured_output=False)(act)


def _add_str_tools(server: MCPServer, rpc: Rpc, manager: bool) -> None:
    for name, tool in _STR_TOOLS.items():
        if tool.manager == manager:
            _add_str_tool(server, rpc, name, tool)


def _hold(ctx: Context, op: str, resp: dict[str, Any]) -> None:
    """What ``resp`` carries is put back if its reply is never written (``Op.unsent``)."""
    caller = CALLER.get()
    unsent = caller.ops[op].unsent
    if unsent is not None:
        caller.unsent[str(ctx.request_id)] = functools.partial(unsent, resp)


def build_server(manager: bool = False, recv_cap: float = Settings.recv_cap_seconds,
                 permission_tool: bool = False) -> MCPServer:
    cap = f"{recv_cap:g}"
    server = StrictServer(  # an argument a tool does not declare is refused (mcp_strict)
        "hyperhive",
        version="0.1.0",
        instructions=(
            "Tools to talk to the other agents of this hive and to the operator. "
            f"When you have nothing else useful to do, call recv with wait_seconds={cap} "
            "to wait for work instead of sleeping."
        ),
    )

    _send_tool(server)
    _add_str_tools(server, rpc, manager=False)

    # The cap is said in the tool's description: a parameter's annotation cannot name a local.
    @server.tool(structured_output=False, description=(
        f"Receive your oldest undelivered messages; waits for one if there are none (the daemon caps "
        f"wait_seconds at {cap})."))
    async def recv(
        ctx: Context,
        wait_seconds: Annotated[
            int | None,
            Field(ge=0, description=(
                "seconds to wait for a message if none is waiting (default 30; the daemon caps it). "
                "Returns at once when a message arrives.")),
        ] = None,
    ) -> str:
        resp = await rpc("recv", wait_seconds=wait_seconds)
        _hold(ctx, "recv", resp)
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

    if permission_tool:  # only for a CLI in "ask" mode: the model of any other never sees it
        _permission_tool(server, rpc)
    if manager:
        _manager_tools(server, rpc)
    server.seal()
    return server


def _permission_tool(server: MCPServer, rpc: Rpc) -> None:
    """The CLI's ``--permission-prompt-tool`` in "permissions": "ask" mode (issue 14)."""

    @server.tool(structured_output=False)
    async def permission(
        tool_name: Annotated[str, Field(description="the tool the CLI wants to run")],
        input: Annotated[dict[str, Any], Field(description="its input")],  # noqa: A002 - the CLI's name
        tool_use_id: Annotated[str, Field(description="the tool_use block's id")] = "",
    ) -> str:
        """Claude Code asks this before a tool call it may not run by itself: the
        operator decides (allow, allow from now on, deny). Not for the model to call."""
        try:
            resp = await rpc("permission", tool_name=tool_name, input_json=json.dumps(input, ensure_ascii=False),
                             tool_use_id=tool_use_id)
            decision = resp["decision"]
        except ToolError as exc:  # no answer to be had: the call does not run
            decision = {"behavior": "deny", "message": f"hyperhive could not ask the operator: {exc}"}
        return json.dumps(decision, ensure_ascii=False)


def _manager_tools(server: MCPServer, rpc: Rpc) -> None:
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
        cpus: Annotated[float | None, Field(description="the ray backend: CPUs its node reserves for it")] = None,
        memory_mb: Annotated[int | None, Field(description="the ray backend: memory its node reserves, MB")] = None,
        resources: Annotated[dict[str, float] | None, Field(description="the ray backend: custom resources "
                                                            "it needs, name → number, e.g. {\"pool\": 1}")] = None,
    ) -> str:
        """Ask the operator to approve a new agent. The outcome arrives as ApprovalResolved.
        cpus, memory_mb and resources place it on a node of the Ray cluster; a placement
        no node can hold, or any placement on another backend, is refused at once."""
        resp = await rpc("request_spawn", name=name, prompt=prompt or None, allowed_recipients=allowed_recipients,
                         cpus=cpus, memory_mb=memory_mb, resources=resources)
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

    @server.tool(structured_output=False)
    async def usage(
        since: Annotated[str, Field(description="the window: a whole number of hours or days (24h, 7d), "
                                    "or all")] = "24h",
    ) -> str:
        """Your agents' model usage over a window: per agent its calls, turns, tokens
        (input, output, cache_read, cache_write), cost in US dollars, today's spend and
        its budget; and the fleet's total. Read only: budgets are the operator's."""
        resp = await rpc("usage", since=since)
        return json.dumps({k: resp[k] for k in ("since", "agents", "fleet")}, ensure_ascii=False)

    _add_str_tools(server, rpc, manager=True)


@dataclass(frozen=True)
class Servers:
    """The four servers of one daemon, built once: (manager, permission_tool) → server."""

    by_kind: dict[tuple[bool, bool], MCPServer]

    @classmethod
    def build(cls, recv_cap: float) -> Servers:
        return cls({(m, p): build_server(m, recv_cap, p) for m in (False, True) for p in (False, True)})

    def get(self, manager: bool, permission_tool: bool) -> MCPServer:
        return self.by_kind[manager, permission_tool]
