"""The agent's MCP server refuses arguments its tools do not declare (as hive.sock
refuses a field its op does not take, ``wire_requests.build``).

The SDK validates a call's arguments with a pydantic model that ignores extra
keys, so a ``send`` with ``"from": "m1nd"`` would run, as the caller, and
answer success: an agent could believe it had spoken as someone else. Here
such a call is a tool error (``isError``) naming what it does not take, and
nothing runs. Each tool's input schema says so too (``"additionalProperties":
false``, set by ``StrictServer.seal`` once its tools are added).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, InputRequiredResult

import hyperhive.logs as logs

__all__ = ["StrictServer", "refusal_text", "unknown_arguments"]

_log = logs.get("hyperhive.mcp")

_SHOWN = 10  # names quoted in one refusal; the rest are counted
_NAME_CHARS = 64  # each quoted name cut to this


def unknown_arguments(schema: Mapping[str, Any], arguments: Mapping[str, Any]) -> list[str]:
    """The argument names ``schema`` (a tool's input schema) does not declare, sorted (pure)."""
    declared = schema.get("properties")
    names = declared if isinstance(declared, Mapping) else {}
    return sorted(str(k) for k in arguments if k not in names)


def refusal_text(tool: str, unknown: list[str], schema: Mapping[str, Any]) -> str:
    """What a call with ``unknown`` arguments is answered, shaped as the SDK's other
    argument errors; the names are the caller's, so quoted and bounded (pure)."""
    shown = ", ".join(repr(n[:_NAME_CHARS] + ("…" if len(n) > _NAME_CHARS else "")) for n in unknown[:_SHOWN])
    more = f" and {len(unknown) - _SHOWN} more" if len(unknown) > _SHOWN else ""
    declared = schema.get("properties")
    takes = ", ".join(declared) if isinstance(declared, Mapping) and declared else "none"
    return (f"Error executing tool {tool}: bad_request: tool {tool!r} does not take argument(s) {shown}{more} "
            f"(it takes: {takes}); nothing was done")


class StrictServer(MCPServer[Any]):
    """An MCPServer whose tools run only with the arguments their schemas declare."""

    def seal(self) -> None:
        """Say it in every tool's input schema: no argument beyond its properties."""
        for tool in self._tool_manager.list_tools():
            tool.parameters["additionalProperties"] = False

    async def call_tool(self, name: str, arguments: dict[str, Any],
                        context: Context[Any, Any] | None = None) -> CallToolResult | InputRequiredResult:
        tool = self._tool_manager.get_tool(name)
        if tool is not None and (unknown := unknown_arguments(tool.parameters, arguments)):
            _log.info("mcp.unknown_arguments", tool=name, unknown=[n[:_NAME_CHARS] for n in unknown[:_SHOWN]],
                      count=len(unknown))
            raise ToolError(refusal_text(name, unknown, tool.parameters))  # → isError, as the SDK's own
        return await super().call_tool(name, arguments, context)
