"""The real Claude Code CLI waits for a slow MCP server before its first
request, with the environment the claude driver gives it (issue 17): in -p
mode it otherwise waits about 2 s, then asks the model without the server's
tools, and a turn on a loaded host would start with no send and no recv.

A stub stdio MCP server answers ``initialize`` only after 3 s; the scripted
Anthropic server records the first request's tools."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_anthropic import FakeAnthropic

from hyperhive.harness.claude_cmdline import claude_env

pytestmark = [
    pytest.mark.e2e,  # the real claude CLI
    pytest.mark.skipif(shutil.which("claude") is None, reason="needs the Claude Code CLI (.ci/run)"),
]

SLOW_SERVER = r'''
import json, sys, time
for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg:
        continue
    if msg["method"] == "initialize":
        time.sleep(3)
        result = {"protocolVersion": msg["params"]["protocolVersion"], "capabilities": {"tools": {}},
                  "serverInfo": {"name": "slow", "version": "1"}}
    elif msg["method"] == "tools/list":
        result = {"tools": [{"name": "ping", "description": "answers pong",
                             "inputSchema": {"type": "object", "properties": {}}}]}
    else:
        print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32601, "message": "no"}}),
              flush=True)
        continue
    print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}), flush=True)
'''


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as f:
        yield f


@pytest.mark.parametrize("driver_env", [True, False], ids=["the driver's env", "without the switch"])
def test_the_first_request_has_a_slow_servers_tools(fake: FakeAnthropic, tmp_path: Path, driver_env: bool) -> None:
    server = tmp_path / "slow_mcp.py"
    server.write_text(SLOW_SERVER)
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"slow": {"type": "stdio", "command": sys.executable,
                                                          "args": [str(server)]}}}))
    home = tmp_path / "home"
    home.mkdir()
    env = claude_env({**os.environ, **fake.env()}, home)
    if not driver_env:
        del env["MCP_CONNECTION_NONBLOCKING"]
    r = subprocess.run([str(shutil.which("claude")), "-p", "--mcp-config", str(config), "--strict-mcp-config",
                        "--output-format", "json"], input=b"hello", capture_output=True, env=env, timeout=120,
                       cwd=home)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    first = fake.main_requests()[0]
    tools = {t.get("name") for t in first.body.get("tools") or []}
    assert ("mcp__slow__ping" in tools) is driver_env, sorted(tools)
