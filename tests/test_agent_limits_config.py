"""agent.json's `limits` and `network` (issue 11, acceptance 3): bad values are
refused with a clear error, at spawn and at approve, and nothing is created."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support import Hive

from hyperhive.client import AsyncClient
from hyperhive.errors import BadRequest, HiveError
from hyperhive.paths import AgentConfig, Limits


@pytest.mark.parametrize(("raw", "memory_mb", "pids", "allow"), [
    ({}, None, None, ()),
    ({"limits": {"memory_mb": 2048}}, 2048, None, ()),
    ({"limits": {"pids": 64, "memory_mb": 64}}, 64, 64, ()),
    ({"network": {"allow": ["pypi.org", "*.github.com", "Example.COM:8443"]}}, None, None,
     ("pypi.org", "*.github.com", "example.com:8443")),
    ({"network": {}}, None, None, ()),
])
def test_good_limits_and_network(raw: dict[str, Any], memory_mb: int | None, pids: int | None,
                                 allow: tuple[str, ...]) -> None:
    cfg = AgentConfig.from_json(json.dumps(raw))
    assert (cfg.memory_mb, cfg.pids, cfg.network_allow) == (memory_mb, pids, allow)
    assert cfg.limits(4096, 512) == Limits(memory_mb or 4096, pids or 512)
    assert AgentConfig.from_json(cfg.to_json()) == cfg  # round trip


@pytest.mark.parametrize(("raw", "says"), [
    ({"limits": {"memory_mb": 1}}, "limits.memory_mb must be a whole number in 64.."),
    ({"limits": {"memory_mb": 1 << 30}}, "limits.memory_mb"),
    ({"limits": {"memory_mb": "512"}}, "limits.memory_mb"),
    ({"limits": {"memory_mb": 512.5}}, "limits.memory_mb"),
    ({"limits": {"memory_mb": True}}, "limits.memory_mb"),
    ({"limits": {"pids": 0}}, "limits.pids"),
    ({"limits": {"pids": -5}}, "limits.pids"),
    ({"limits": {"cpu": 2}}, "unknown key(s): cpu"),
    ({"limits": [512]}, "limits must be an object"),
    ({"network": {"allow": "pypi.org"}}, "network.allow"),
    ({"network": {"allow": ["http://pypi.org"]}}, "network.allow"),
    ({"network": {"allow": ["../etc"]}}, "network.allow"),
    ({"network": {"allow": ["a b"]}}, "network.allow"),
    ({"network": {"allow": ["x\u0000y"]}}, "network.allow"),
    ({"network": {"allow": ["\ud800.com"]}}, "network.allow"),
    ({"network": {"allow": ["*"]}}, "network.allow"),
    ({"network": {"allow": [1]}}, "network.allow"),
    ({"network": {"deny": []}}, "unknown key(s): deny"),
    ({"network": "all"}, "network must be an object"),
])
def test_bad_limits_and_network_are_refused_clearly(raw: dict[str, Any], says: str) -> None:
    with pytest.raises(BadRequest) as err:
        AgentConfig.from_json(json.dumps(raw), where="agent.json")
    assert says in err.value.message and err.value.message.startswith("agent.json")


def _m1nd(hive: Hive, op: str, **fields: Any) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        c = AsyncClient(hive.socket("m1nd"))
        try:
            return await c.request(op, **fields)
        finally:
            await c.close()
    return asyncio.run(go())


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.e2e  # starts a daemon
def test_bad_values_are_refused_at_propose_and_approve_and_nothing_is_created(hive: Hive) -> None:
    hive.spawn("a")
    repo = hive.paths.config_dir("a")  # type: ignore[arg-type]
    head = _git(repo, "rev-parse", "HEAD")
    applied = (hive.paths.applied("a") / "agent.json").read_text()  # type: ignore[arg-type]
    with pytest.raises(HiveError) as err:
        _m1nd(hive, "propose_config", agent="a", message="more", agent_json='{"limits": {"memory_mb": 1}}')
    assert err.value.code == "bad_request" and "limits.memory_mb" in err.value.message
    with pytest.raises(HiveError) as err:
        _m1nd(hive, "propose_config", agent="a", message="out", agent_json='{"network": {"allow": ["http://x"]}}')
    assert "network.allow" in err.value.message
    assert _git(repo, "rev-parse", "HEAD") == head  # no commit was made
    # A commit made in the repo by hand with bad values: its apply is refused when requested.
    (repo / "agent.json").write_text('{"limits": {"pids": 1}}\n')
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "bad pids")
    with pytest.raises(HiveError) as err:
        _m1nd(hive, "request_apply_commit", agent="a", commit=_git(repo, "rev-parse", "HEAD"))
    assert "limits.pids" in err.value.message
    assert hive.admin("approvals")["pending"] == []
    assert (hive.paths.applied("a") / "agent.json").read_text() == applied  # type: ignore[arg-type]
