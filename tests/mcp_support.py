"""Driving `hive mcp` with the `mcp` package's own stdio client."""

from __future__ import annotations

import json
import sys
from contextlib import asynccontextmanager
from typing import Any

from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client


@asynccontextmanager
async def mcp_session(socket_path: Any):  # type: ignore[no-untyped-def]
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "hyperhive", "mcp", "--socket", str(socket_path)]
    )
    async with stdio_client(params) as (r, w), ClientSession(r, w) as s:
        await s.initialize()
        yield s


def tool_text(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


def tool_json(result: Any) -> Any:
    assert not result.is_error, result.content
    return json.loads(tool_text(result))
