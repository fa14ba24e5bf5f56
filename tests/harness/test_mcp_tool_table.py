"""The agent's MCP tools (served by the daemon on mcp.sock) as the model sees them (pure: the server is built, not run):
the string-parameter tools come from one table, and the recv cap is the one
the daemon gives (else the setting's default)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hyperhive.settings import Settings
from hyperhive.web.rpc.mcp_tools import build_server

AGENT_TOOLS = {"send", "recv", "recent"}
MANAGER_TOOLS = AGENT_TOOLS | {"ask_operator", "request_spawn", "request_apply_commit", "propose_config",
                               "start", "restart", "kill", "usage"}


def tools(manager: bool, **kw: Any) -> dict[str, Any]:
    server = build_server(manager=manager, **kw)
    return {t.name: t for t in asyncio.run(server.list_tools())}


@pytest.mark.parametrize(("manager", "want"), [(False, AGENT_TOOLS), (True, MANAGER_TOOLS)])
def test_each_socket_gets_its_tools(manager: bool, want: set[str]) -> None:
    assert set(tools(manager)) == want


@pytest.mark.parametrize(("name", "params"), [("send", ["to", "body"]), ("request_apply_commit", ["agent", "commit"]),
                                              ("start", ["name"]), ("restart", ["name"]), ("kill", ["name"])])
def test_string_tools_have_named_required_string_parameters(name: str, params: list[str]) -> None:
    t = tools(True)[name]
    schema = t.input_schema
    assert schema["title"] == f"{name}Arguments"
    assert list(schema["properties"]) == params and schema["required"] == params
    assert all(p["type"] == "string" and p["description"] for p in schema["properties"].values())
    assert t.description and t.description.endswith(".")


@pytest.mark.parametrize(("cap", "shown"), [(60.0, "60"), (12.5, "12.5")])
def test_the_recv_cap_is_the_daemons(cap: float, shown: str) -> None:
    assert f"caps wait_seconds at {shown})" in tools(False, recv_cap=cap)["recv"].description


def test_without_a_cap_from_the_daemon_the_setting_default_is_said() -> None:
    assert f"at {Settings.recv_cap_seconds:g})" in tools(False)["recv"].description
