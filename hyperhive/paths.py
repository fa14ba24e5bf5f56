"""Where everything lives under the state dir, and each agent's config file.

    <state>/hive.sqlite
    <state>/run/admin.sock
    <state>/agents/<name>/{config/agent.json, state/, run/hive.sock, port}
    <state>/applied/<name>/agent.json      the config the container runs with
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyperhive.errors import BadRequest
from hyperhive.names import AgentName, agent_dir, is_valid_name, validate_name

__all__ = ["AgentConfig", "StatePaths"]

CONFIG_FILE = "agent.json"
DRIVERS = ("builtin", "claude")
# A Claude Code permission rule: a tool name, optionally with a (specifier) and no comma
# (the list is passed comma-joined to --allowedTools).
_TOOL_RULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\([^,\x00-\x1f]*\))?")


@dataclass(frozen=True)
class AgentConfig:
    """What an agent's config file may say. Unknown keys are refused."""

    driver: str | None = None  # None: the daemon's default
    allowed_recipients: tuple[str, ...] | None = None  # None: anyone
    allowed_tools: tuple[str, ...] | None = None  # claude --allowedTools; None: the hyperhive tools

    @classmethod
    def from_json(cls, text: str, where: str = "agent config") -> AgentConfig:
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise BadRequest(f"{where} is not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise BadRequest(f"{where} must be a JSON object")
        unknown = set(raw) - {"driver", "allowed_recipients", "allowed_tools"}
        if unknown:
            raise BadRequest(f"{where} has unknown key(s): {', '.join(sorted(unknown))}")
        driver = raw.get("driver")
        if driver is not None and driver not in DRIVERS:
            raise BadRequest(f"{where}: driver must be one of {', '.join(DRIVERS)}")
        allowed = raw.get("allowed_recipients")
        if allowed is not None:
            if not isinstance(allowed, list) or not all(is_valid_name(a) for a in allowed):
                raise BadRequest(f"{where}: allowed_recipients must be a list of agent names")
            allowed = tuple(allowed)
        tools = raw.get("allowed_tools")
        if tools is not None:
            if not isinstance(tools, list) or not all(isinstance(t, str) and _TOOL_RULE.fullmatch(t) for t in tools):
                raise BadRequest(f"{where}: allowed_tools must be a list of tool rules like "
                                 f"'mcp__hyperhive' or 'Bash(git log:*)' (no commas)")
            tools = tuple(tools)
        return cls(driver=driver, allowed_recipients=allowed, allowed_tools=tools)

    def to_json(self) -> str:
        out: dict[str, Any] = {}
        if self.driver is not None:
            out["driver"] = self.driver
        if self.allowed_recipients is not None:
            out["allowed_recipients"] = list(self.allowed_recipients)
        if self.allowed_tools is not None:
            out["allowed_tools"] = list(self.allowed_tools)
        return json.dumps(out, indent=2) + "\n"


@dataclass(frozen=True)
class StatePaths:
    root: Path

    @property
    def db(self) -> Path:
        return self.root / "hive.sqlite"

    @property
    def admin_socket(self) -> Path:
        return self.root / "run" / "admin.sock"

    @property
    def agents(self) -> Path:
        return self.root / "agents"

    @property
    def applied_root(self) -> Path:
        return self.root / "applied"

    def agent(self, name: AgentName) -> Path:
        return agent_dir(self.agents, name)

    def config_dir(self, name: AgentName) -> Path:
        return self.agent(name) / "config"

    def state(self, name: AgentName) -> Path:
        return self.agent(name) / "state"

    def run(self, name: AgentName) -> Path:
        return self.agent(name) / "run"

    def socket(self, name: AgentName) -> Path:
        return self.run(name) / "hive.sock"

    def applied(self, name: AgentName) -> Path:
        return agent_dir(self.applied_root, name)

    def harness_log(self, name: AgentName) -> Path:
        return self.state(name) / "harness.log"

    def create_agent(self, name: AgentName, config: AgentConfig) -> None:
        """Lay out a new agent's dirs; an existing config (a revived agent) is kept."""
        for d in (self.config_dir(name), self.state(name), self.run(name)):
            d.mkdir(parents=True, exist_ok=True)
        cfg = self.config_dir(name) / CONFIG_FILE
        if not cfg.exists():
            cfg.write_text(config.to_json())
        applied = self.applied(name)
        if not (applied / CONFIG_FILE).exists():
            applied.mkdir(parents=True, exist_ok=True)
            shutil.copy2(cfg, applied / CONFIG_FILE)

    def load_applied(self, name: AgentName) -> AgentConfig:
        f = self.applied(validate_name(name)) / CONFIG_FILE
        if not f.exists():
            return AgentConfig()
        return AgentConfig.from_json(f.read_text(), where=str(f))
