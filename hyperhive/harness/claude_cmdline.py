"""The claude driver's command line (pure): the CLI's argv for one turn, its
environment (small and explicit, with the switches that keep the CLI off the
network except for its API), the ``--mcp-config`` document that wires in
`hive mcp`, and whether the CLI can log in.

Permission modes (agent.json ``permissions``, issue 14), `permission_mode`
decides which one a harness really runs:
- ``sandbox``: ``--permission-mode bypassPermissions``, every Claude Code tool;
  the sandbox is the limit. Only ever when the harness runs sandboxed: asked
  for unsandboxed, it falls back to ``allowlist`` (and the harness logs it).
- ``ask``: ``--permission-prompt-tool mcp__hyperhive__permission``: each call
  not allowed already goes to the daemon's ``permission`` op, which allows a
  tool the operator granted "from now on" at once and asks the operator about
  any other; the hyperhive tools and ``allowed_tools`` are passed as
  ``--allowedTools``. The grants are not (review 14c): a tool on that list is
  never asked about again in the turn, so a revoke would wait for the turn's
  end, and a turn lasts as long as the model likes.
- ``allowlist``: ``--allowedTools`` from ``allowed_tools`` only (default: the
  hyperhive tools); anything else is refused by the CLI. The built-in tools
  the CLI offers at all are the ones ``allowed_tools`` names (``--tools``,
  `builtin_tools`): else its own rules would still run read-only commands and
  reads in the working dir with no approval.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hyperhive.mcp_pipe import pipe_argv

__all__ = [
    "CREDENTIAL_ENV",
    "DEFAULT_ALLOWED_TOOLS",
    "FORCED_ENV",
    "PERMISSION_TOOL",
    "PERMISSION_TOOL_ENV",
    "builtin_tools",
    "claude_argv",
    "claude_env",
    "has_credentials",
    "mcp_config",
    "permission_args",
    "permission_mode",
    "settings_args",
]

DEFAULT_ALLOWED_TOOLS = ("mcp__hyperhive",)  # every hyperhive tool, nothing else
PERMISSION_TOOL = "mcp__hyperhive__permission"  # `hive mcp`'s tool the CLI asks in "ask" mode
PERMISSION_TOOL_ENV = "HYPERHIVE_MCP_PERMISSION_TOOL"  # set: `hive mcp` serves that tool (only then)
FORCED_ENV = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_ERROR_REPORTING": "1",
    # In -p mode the CLI waits ~2 s for its MCP servers, then makes its first request without
    # their tools: on a loaded host a turn could start with no send or recv (issue 17).
    "MCP_CONNECTION_NONBLOCKING": "0",
}
_PASS_KEYS = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY",
              "SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS")
_PASS_PREFIXES = ("ANTHROPIC_", "CLAUDE_CODE_")
CREDENTIAL_ENV = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN")


def mcp_config(socket_path: str, python: str = sys.executable, permission_tool: bool = False) -> dict[str, Any]:
    """The ``--mcp-config`` document: one stdio server, `hive mcp` on the agent's socket.
    ``permission_tool`` ("ask" mode): it also serves the CLI's prompt tool."""
    server: dict[str, Any] = {
        "type": "stdio", "command": python, "args": pipe_argv(python, socket_path)[1:],
    }
    if permission_tool:
        server["env"] = {PERMISSION_TOOL_ENV: "1"}
    return {"mcpServers": {"hyperhive": server}}


def permission_mode(configured: str | None, sandboxed: bool) -> tuple[str, str | None]:
    """The mode a harness runs (see the module docstring) and, when it is not the
    one configured, why. Never ``sandbox`` (every tool) without a sandbox."""
    mode = configured or ("sandbox" if sandboxed else "allowlist")
    if mode == "sandbox" and not sandboxed:
        return "allowlist", "permissions 'sandbox' allows every tool only inside a sandbox; unsandboxed: allowlist"
    return mode, None


def builtin_tools(allowed_tools: Sequence[str]) -> list[str]:
    """The built-in tools an allowlist names: ``Bash(git *)`` names Bash; MCP tools are not built in."""
    names = (t.split("(", 1)[0].strip() for t in allowed_tools if not t.startswith("mcp__"))
    return list(dict.fromkeys(n for n in names if n))


def permission_args(mode: str, allowed_tools: Sequence[str], granted: Sequence[str] = ()) -> list[str]:
    """The CLI's permission flags for ``mode`` (already decided by `permission_mode`).
    ``granted`` (the tools granted "from now on") is deliberately left off
    ``--allowedTools``: the ``permission`` op allows them call by call, so a
    revoke holds from the next call on (see the module's doc)."""
    del granted  # decided per call by the daemon, never fixed for a whole turn
    if mode == "sandbox":
        return ["--permission-mode", "bypassPermissions"]
    if mode == "ask":
        tools = list(dict.fromkeys([*DEFAULT_ALLOWED_TOOLS, *allowed_tools]))
        return ["--permission-prompt-tool", PERMISSION_TOOL, "--allowedTools", ",".join(tools)]
    offered = ["--tools", ",".join(builtin_tools(allowed_tools))]  # "": no built-in tool at all
    return [*offered, "--allowedTools", ",".join(allowed_tools)] if allowed_tools else offered


def settings_args(mode: str) -> list[str]:
    """The flags that make the harness's choice the only settings the CLI reads.

    HOME is the agent's state dir and the cwd its workspace, both the agent's
    to write: with its default sources the CLI would load
    ``$HOME/.claude/settings.json`` and ``<cwd>/.claude/settings{,.local}.json``
    (hooks it runs before any permission check, ``permissions.allow``,
    ``defaultMode``, ``env``, ``apiKeyHelper``). ``--setting-sources ""`` loads
    none of them (admin-managed policy files, root's, still apply); the inline
    ``--settings`` JSON (never a file, so nothing the agent could swap) turns
    every hook off and pins the permission mode the harness chose (outside
    ``sandbox`` mode, bypassing permissions cannot be switched on at all). A
    settings JSON the CLI finds invalid is silently ignored in ``-p`` mode:
    tests/security/test_review14_claude_settings.py runs the real CLI on it.

    In ``sandbox`` mode the pin is left off: there the CLI already runs every
    tool with no question, inside the sandbox, so a hook (which would run in
    the same sandbox) or a permission setting could give the agent nothing it
    lacks, and ``--setting-sources ""`` still loads none of its files. The
    pin is not free: any ``--settings`` at all, even ``{}``, costs the CLI
    about 35 ms before its first request (issue 17). In ``ask`` mode a hook
    could answer a tool's permission check in the operator's place, and in
    ``allowlist`` mode it runs outside any sandbox, so both keep it.
    """
    if mode == "sandbox":
        return ["--setting-sources", ""]
    pinned = {"disableAllHooks": True,
              "permissions": {"defaultMode": "default", "disableBypassPermissionsMode": "disable"}}
    return ["--setting-sources", "", "--settings", json.dumps(pinned, separators=(",", ":"), sort_keys=True)]


def claude_argv(binary: str, mcp_config_path: Path, allowed_tools: Sequence[str],
                session_id: str | None, append_system: str | None = None,
                mode: str = "allowlist", granted: Sequence[str] = ()) -> list[str]:
    """The CLI command line for one turn; the prompt goes on stdin."""
    argv = [
        binary, "-p",
        "--output-format", "stream-json", "--verbose",
        "--mcp-config", str(mcp_config_path), "--strict-mcp-config",
        *settings_args(mode),
    ]
    if append_system:
        argv += ["--append-system-prompt", append_system]
    argv += permission_args(mode, allowed_tools, granted)
    if session_id:
        argv += ["--resume", session_id]
    return argv


def claude_env(parent: Mapping[str, str], home: Path, sandboxed: bool = False) -> dict[str, str]:
    """A small, explicit environment: locale, PATH, proxies, the ANTHROPIC_* and
    CLAUDE_CODE_* settings (API URL, key, unix socket), HOME, and the switches
    that keep the CLI off the network except for its API. ``sandboxed``: the CLI
    is told so (``IS_SANDBOX=1``; it refuses to bypass permissions as root otherwise)."""
    env = {k: v for k, v in parent.items() if k in _PASS_KEYS or k.startswith(_PASS_PREFIXES)}
    env.update(FORCED_ENV)
    env["HOME"] = str(home)
    if sandboxed:
        env["IS_SANDBOX"] = "1"
    return env


def has_credentials(home: Path, env: Mapping[str, str]) -> bool:
    """Whether the CLI can log in: a key in the environment or stored credentials in HOME."""
    return any(env.get(k) for k in CREDENTIAL_ENV) or (home / ".claude" / ".credentials.json").exists()
