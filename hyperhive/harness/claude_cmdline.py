"""The claude driver's command line (pure): the CLI's argv for one turn, its
environment (small and explicit, with the switches that keep the CLI off the
network except for its API), the ``--mcp-config`` document that wires in
`hive mcp`, and whether the CLI can log in.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "CREDENTIAL_ENV",
    "DEFAULT_ALLOWED_TOOLS",
    "FORCED_ENV",
    "claude_argv",
    "claude_env",
    "has_credentials",
    "mcp_config",
]

DEFAULT_ALLOWED_TOOLS = ("mcp__hyperhive",)  # every hyperhive tool, nothing else
FORCED_ENV = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_ERROR_REPORTING": "1",
}
_PASS_KEYS = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY",
              "SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS")
_PASS_PREFIXES = ("ANTHROPIC_", "CLAUDE_CODE_")
CREDENTIAL_ENV = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN")


def mcp_config(socket_path: str, python: str = sys.executable) -> dict[str, Any]:
    """The ``--mcp-config`` document: one stdio server, `hive mcp` on the agent's socket."""
    return {"mcpServers": {"hyperhive": {
        "type": "stdio", "command": python, "args": ["-m", "hyperhive", "mcp", "--socket", socket_path],
    }}}


def claude_argv(binary: str, mcp_config_path: Path, allowed_tools: Sequence[str],
                session_id: str | None, append_system: str | None = None) -> list[str]:
    """The CLI command line for one turn; the prompt goes on stdin."""
    argv = [
        binary, "-p",
        "--output-format", "stream-json", "--verbose",
        "--mcp-config", str(mcp_config_path), "--strict-mcp-config",
    ]
    if append_system:
        argv += ["--append-system-prompt", append_system]
    if allowed_tools:
        argv += ["--allowedTools", ",".join(allowed_tools)]
    if session_id:
        argv += ["--resume", session_id]
    return argv


def claude_env(parent: Mapping[str, str], home: Path) -> dict[str, str]:
    """A small, explicit environment: locale, PATH, proxies, the ANTHROPIC_* and
    CLAUDE_CODE_* settings (API URL, key, unix socket), HOME, and the switches
    that keep the CLI off the network except for its API."""
    env = {k: v for k, v in parent.items() if k in _PASS_KEYS or k.startswith(_PASS_PREFIXES)}
    env.update(FORCED_ENV)
    env["HOME"] = str(home)
    return env


def has_credentials(home: Path, env: Mapping[str, str]) -> bool:
    """Whether the CLI can log in: a key in the environment or stored credentials in HOME."""
    return any(env.get(k) for k in CREDENTIAL_ENV) or (home / ".claude" / ".credentials.json").exists()
