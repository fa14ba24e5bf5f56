"""The claude driver's permission modes (issue 14, items 2, 3 and 4): the CLI's
argv per mode, sandboxed and not (never every tool unsandboxed), the grants
at turn start, and the system prompt that tells the agent where it is."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from hyperhive.harness.claude import ClaudeDriver
from hyperhive.harness.claude_cmdline import (
    PERMISSION_TOOL,
    builtin_tools,
    claude_argv,
    claude_env,
    permission_args,
    permission_mode,
)
from hyperhive.harness.claude_prompt import Whereabouts, system_prompt
from hyperhive.harness.loop import HarnessOptions, make_driver
from hyperhive.paths import AgentConfig


@pytest.mark.parametrize(("configured", "sandboxed", "mode", "fell_back"), [
    (None, True, "sandbox", False),
    (None, False, "allowlist", False),
    ("sandbox", True, "sandbox", False),
    ("sandbox", False, "allowlist", True),  # never bypass unsandboxed, whatever agent.json says
    ("ask", True, "ask", False),
    ("ask", False, "ask", False),
    ("allowlist", True, "allowlist", False),
    ("allowlist", False, "allowlist", False),
])
def test_mode_per_config_and_sandbox(configured: str | None, sandboxed: bool, mode: str, fell_back: bool) -> None:
    got, why = permission_mode(configured, sandboxed)
    assert got == mode and (why is not None) == fell_back


def test_permission_flags_per_mode() -> None:
    assert permission_args("sandbox", ("mcp__hyperhive",)) == ["--permission-mode", "bypassPermissions"]
    # allowlist: the built-in tools offered are the ones the list names, no others.
    assert permission_args("allowlist", ("mcp__hyperhive", "Bash(git log:*)")) == [
        "--tools", "Bash", "--allowedTools", "mcp__hyperhive,Bash(git log:*)"]
    assert permission_args("allowlist", ("mcp__hyperhive",)) == ["--tools", "", "--allowedTools", "mcp__hyperhive"]
    assert permission_args("allowlist", ()) == ["--tools", ""]
    assert builtin_tools(("Read", "Bash(git *)", "mcp__x__y", "Bash(ls)", " (odd")) == ["Read", "Bash"]
    # ask: the prompt tool, the hyperhive tools always and allowed_tools (once each); never the
    # grants, which the permission op allows call by call (a revoke holds mid-turn: review 14c).
    assert permission_args("ask", ("Read", "mcp__hyperhive"), ("Bash", "Read")) == [
        "--permission-prompt-tool", PERMISSION_TOOL, "--allowedTools", "mcp__hyperhive,Read"]


def _driver(cfg: AgentConfig, sandboxed: bool, tmp_path: Path, workspace: Path | None = None) -> ClaudeDriver:
    d = make_driver("alice", "claude", "/s/hive.sock", tmp_path / "state", cfg,
                    HarnessOptions(sandboxed=sandboxed, workspace=workspace))
    assert isinstance(d, ClaudeDriver)
    return d


@pytest.mark.parametrize("sandboxed", [True, False])
@pytest.mark.parametrize("configured", [None, "sandbox", "ask", "allowlist"])
def test_driver_argv_never_bypasses_unsandboxed(configured: str | None, sandboxed: bool, tmp_path: Path) -> None:
    argv = _driver(AgentConfig(permissions=configured), sandboxed, tmp_path).argv()
    bypass = "bypassPermissions" in argv
    assert bypass == (sandboxed and configured in (None, "sandbox"))
    assert "--dangerously-skip-permissions" not in argv
    if not bypass:
        tools = argv[argv.index("--allowedTools") + 1].split(",")
        assert "Bash" not in tools and tools[0] == "mcp__hyperhive"
    assert ("--permission-prompt-tool" in argv) == (configured == "ask")


def test_sandbox_mode_tells_the_cli_it_is_sandboxed(tmp_path: Path) -> None:
    assert _driver(AgentConfig(), True, tmp_path).env["IS_SANDBOX"] == "1"
    assert "IS_SANDBOX" not in _driver(AgentConfig(), False, tmp_path).env
    assert "IS_SANDBOX" not in _driver(AgentConfig(permissions="ask"), True, tmp_path).env
    assert "IS_SANDBOX" not in claude_env({}, tmp_path)


async def test_ask_mode_passes_the_grants_asked_at_turn_start(tmp_path: Path) -> None:
    asked: list[int] = []

    async def grants() -> Mapping[str, object]:
        asked.append(1)
        return {"tools": ["Bash"], "ttl_seconds": 3000}

    d = ClaudeDriver("alice", "/s", tmp_path, where=Whereabouts(mode="ask"), grants=grants)
    await d._refresh_grants()
    argv = d.argv()
    # The grants are asked (for the TTL), but not passed: the permission op allows them per call.
    assert asked and argv[argv.index("--allowedTools") + 1] == "mcp__hyperhive"
    assert d.silence == 3060  # a CLI waiting on the operator is not a hung one
    assert int(d.env["MCP_TOOL_TIMEOUT"]) > 7 * 86400 * 1000
    assert "- Allowed tools: mcp__hyperhive." in argv[argv.index("--append-system-prompt") + 1]

    async def broken() -> Mapping[str, object]:
        raise ConnectionError("daemon gone")

    d = ClaudeDriver("alice", "/s", tmp_path, where=Whereabouts(mode="ask"), grants=broken)
    await d._refresh_grants()  # the permission op still allows granted tools: no failure here
    assert d.granted == ()


def test_workspace_is_the_working_dir_and_the_prompt_says_where(tmp_path: Path) -> None:
    work = tmp_path / "work"
    cfg = AgentConfig(network_allow=("pypi.org",), memory_mb=2048, pids=64)
    d = _driver(cfg, True, tmp_path, workspace=work)
    assert d.cwd == work
    prompt = d.argv()[d.argv().index("--append-system-prompt") + 1]
    assert f"Your workspace is {work}, a git repository on branch hive/alice" in prompt
    assert "Tools (sandbox mode): every Claude Code tool" in prompt
    assert "only these hosts: pypi.org." in prompt
    assert "2048 MB of memory, 64 processes" in prompt
    unsandboxed = _driver(AgentConfig(permissions="sandbox"), False, tmp_path)
    text = unsandboxed.argv()[unsandboxed.argv().index("--append-system-prompt") + 1]
    assert "Tools (allowlist mode): only the allowed tools run" in text and "- Allowed tools: mcp__hyperhive." in text
    assert "You run unsandboxed" in text and "the hive's default memory limit" in text
    assert unsandboxed.cwd == tmp_path / "state"  # no workspace: the state dir, as before


def test_old_argv_and_prompt_are_unchanged_without_a_mode(tmp_path: Path) -> None:
    argv = claude_argv("claude", Path("/s/c.json"), ("mcp__hyperhive",), None)
    assert argv[-2:] == ["--allowedTools", "mcp__hyperhive"]
    assert "Where you are:" not in system_prompt("a", tmp_path)


def test_only_an_ask_mode_cli_gets_the_permission_tool(tmp_path: Path) -> None:
    import asyncio

    from hyperhive.harness.claude_cmdline import PERMISSION_TOOL_ENV, mcp_config
    from hyperhive.web.rpc.mcp_tools import build_server

    def names(**kw: bool) -> set[str]:
        return {t.name for t in asyncio.run(build_server(**kw).list_tools())}

    assert "permission" not in names() and "permission" not in names(manager=True)
    assert "permission" in names(permission_tool=True)
    tool = next(t for t in asyncio.run(build_server(permission_tool=True).list_tools()) if t.name == "permission")
    assert set(tool.input_schema["properties"]) == {"tool_name", "input", "tool_use_id"}
    assert "env" not in mcp_config("/s")["mcpServers"]["hyperhive"]
    assert mcp_config("/s", permission_tool=True)["mcpServers"]["hyperhive"]["env"] == {PERMISSION_TOOL_ENV: "1"}
    assert ClaudeDriver("a", "/s", tmp_path, where=Whereabouts(mode="ask")).mode == "ask"
    ask = ClaudeDriver("a", "/s", tmp_path, where=Whereabouts(mode="ask"))
    asyncio.run(ask.open())
    assert PERMISSION_TOOL_ENV in ask.mcp_config_path.read_text()
    plain = ClaudeDriver("a", "/s", tmp_path / "p")
    asyncio.run(plain.open())
    assert PERMISSION_TOOL_ENV not in plain.mcp_config_path.read_text()
