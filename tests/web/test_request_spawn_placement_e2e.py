"""A placement in a spawn request (issue 18), on a real daemon whose backend is
local: the manager's MCP tool, ``hive request-spawn`` and the admin socket refuse
a bad one, and any one at all (nothing would be reserved on this host), with a
clear error; nothing is queued or created. (The cluster's checks, with the real
``RayBackend.check``, are in test_request_spawn_placement.py; the dashboard's
form and the admin socket side by side in test_operator_parity.py.)"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from typing import Any

import pytest
from mcp_support import mcp_session, tool_text
from support import Hive

from hyperhive.errors import HiveError

pytestmark = pytest.mark.e2e


def made(h: Hive) -> tuple[int, list[str]]:
    with sqlite3.connect(h.paths.db) as db:
        approvals = db.execute("SELECT count(*) FROM approvals").fetchone()[0]
    return approvals, sorted(p.name for p in h.paths.agents.iterdir())


async def test_the_managers_tool_takes_a_placement_and_refuses_a_bad_one(module_hive: Hive) -> None:
    before = made(module_hive)
    async with mcp_session(module_hive.socket("m1nd")) as s:
        tool = {t.name: t for t in (await s.list_tools()).tools}["request_spawn"]
        assert {"cpus", "memory_mb", "resources"} <= set(tool.input_schema["properties"])
        cases: list[tuple[dict[str, Any], str]] = [
            ({"cpus": -1}, "above 0"), ({"cpus": 1.5}, "whole number"), ({"memory_mb": 0}, "whole number of MB"),
            ({"resources": {"CPU": 1}}, "use --cpus"), ({"resources": {"a b": 1}}, "resource name"),
            ({"resources": {"pool": -2}}, "above 0"),
            ({"cpus": 1, "resources": {"pool": 1}}, "the local backend runs every agent on this host"),
        ]
        for fields, says in cases:
            out = await s.call_tool("request_spawn", {"name": "fresh", **fields})
            assert out.is_error and "bad_request" in tool_text(out) and says in tool_text(out), (fields, out)
    assert made(module_hive) == before


def test_hive_request_spawn_takes_the_spawn_flags(module_hive: Hive) -> None:
    before = made(module_hive)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hyperhive", "--state-dir", str(module_hive.state_dir),
                               "request-spawn", "fresh", *args], capture_output=True, text=True, timeout=60)

    for args, says in ((["--resources", "CPU=1"], "use --cpus"), (["--cpus", "nan"], "--cpus must be a number"),
                       (["--cpus", "1"], "the local backend runs every agent on this host")):
        r = cli(*args)
        assert r.returncode != 0 and says in r.stderr, (args, r.stderr)
    with pytest.raises(HiveError, match="the local backend runs every agent on this host"):
        module_hive.admin("request_spawn", name="fresh", resources={"pool": 1})
    assert made(module_hive) == before
