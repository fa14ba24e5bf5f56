"""Where everything lives under the state dir, and each agent's config file.

    <state>/hive.sqlite
    <state>/run/admin.sock
    <state>/agents/<name>/{config/agent.json, state/, work/, run/{hive,mcp}.sock, port, uid, harness.log}
    <state>/applied/<name>/agent.json      the config the container runs with
    <state>/agents-dir                     where the agents' dirs are (`hyperhive.agents_dir`)

With ``--agents-dir`` the agents' dirs are ``<agents-dir>/<name>/`` instead (another
filesystem than hive.sqlite's, say): `StatePaths.agents_root`; nothing else moves.

``state/`` (the agent's HOME) and ``work/`` (its workspace) belong to the agent
and are bound read-write into its sandbox; everything else under
``agents/<name>/`` is the daemon's (see `hyperhive.sandbox.accounts`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyperhive.budgets import Budget, parse_budget
from hyperhive.errors import BadRequest
from hyperhive.names import AgentName, agent_dir, is_valid_name, validate_name
from hyperhive.placement import Placement, parse_placement_json

__all__ = ["AgentConfig", "Limits", "StatePaths"]

CONFIG_FILE = "agent.json"
WEB_SOCKET = "web.sock"
DRIVERS = ("builtin", "claude")
# A Claude Code permission rule: a tool name, optionally with a (specifier) and no comma
# (the list is passed comma-joined to --allowedTools).
_TOOL_RULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\([^,\x00-\x1f]*\))?")
_KEYS = frozenset({"driver", "allowed_recipients", "allowed_tools", "limits", "network", "repo", "permissions",
                   "budget", "hibernate_after_seconds", "placement"})
# How the claude driver treats tool calls (issue 14): "sandbox", every tool (the sandbox is the limit);
# "ask", each call not yet allowed goes to the operator as a question; "allowlist", `allowed_tools` only.
PERMISSIONS = ("sandbox", "ask", "allowlist")
MEMORY_MB_RANGE = (64, 1 << 20)  # the harness and its MCP server alone take ~110 MB
PIDS_RANGE = (16, 1 << 22)
HIBERNATE_MAX = 365 * 24 * 3600  # seconds: a year


@dataclass(frozen=True)
class Limits:
    """Per-agent limits (cgroups on the local backend, unit limits on nixos)."""

    memory_mb: int
    pids: int


def _clean_path(path: str) -> bool:
    """No NUL, no line break, no ``..`` component: a path a person meant."""
    return not any(c in path for c in "\x00\n\r") and ".." not in path.split("/") and len(path) <= 4096


def _parse_limits(raw: Any, where: str) -> tuple[int | None, int | None]:
    if not isinstance(raw, dict):
        raise BadRequest(f'{where}: limits must be an object like {{"memory_mb": 4096, "pids": 512}}')
    unknown = set(raw) - {"memory_mb", "pids"}
    if unknown:
        raise BadRequest(f"{where}: limits has unknown key(s): {', '.join(sorted(map(str, unknown)))}")
    out: list[int | None] = []
    for key, (lo, hi) in (("memory_mb", MEMORY_MB_RANGE), ("pids", PIDS_RANGE)):
        v = raw.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi):
            raise BadRequest(f"{where}: limits.{key} must be a whole number in {lo}..{hi}, got {v!r}")
        out.append(v)
    return out[0], out[1]


def _parse_network(raw: Any, where: str) -> tuple[str, ...]:
    from hyperhive.sandbox.allowlist import Allowlist

    if not isinstance(raw, dict):
        raise BadRequest(f'{where}: network must be an object like {{"allow": ["pypi.org"]}}')
    unknown = set(raw) - {"allow"}
    if unknown:
        raise BadRequest(f"{where}: network has unknown key(s): {', '.join(sorted(map(str, unknown)))}")
    return Allowlist.parse(raw.get("allow", []), where=f"{where}: network.allow").patterns


@dataclass(frozen=True)
class AgentConfig:
    """What an agent's config file may say. Unknown keys are refused."""

    driver: str | None = None  # None: the daemon's default
    allowed_recipients: tuple[str, ...] | None = None  # None: anyone
    allowed_tools: tuple[str, ...] | None = None  # claude --allowedTools; None: the hyperhive tools
    memory_mb: int | None = None  # None: the daemon's --agent-memory-mb
    pids: int | None = None  # None: the daemon's --agent-pids
    network_allow: tuple[str, ...] = ()  # hosts the egress proxy lets through (the model API always)
    repo: str | None = None  # the operator's repository the agent works on a clone of (absolute path)
    permissions: str | None = None  # one of PERMISSIONS; None: "sandbox" when sandboxed, else "allowlist"
    budget: Budget | None = None  # {"usd": 5, "per": "day"|"week"|"total"} (issue 15); None: no budget
    hibernate_after_seconds: float | None = None  # issue 17; None: the daemon's; 0: never
    placement: Placement | None = None  # issue 18, the ray backend: where it may run (placement.py)

    @classmethod
    def from_json(cls, text: str, where: str = "agent config") -> AgentConfig:
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise BadRequest(f"{where} is not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise BadRequest(f"{where} must be a JSON object")
        unknown = set(raw) - _KEYS
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
        memory_mb, pids = _parse_limits(raw["limits"], where) if "limits" in raw else (None, None)
        allow = _parse_network(raw["network"], where) if "network" in raw else ()
        repo = raw.get("repo")
        if repo is not None and not (isinstance(repo, str) and repo.startswith("/") and _clean_path(repo)):
            raise BadRequest(f"{where}: repo must be an absolute path (no NUL, line breaks or '..')")
        permissions = raw.get("permissions")
        if permissions is not None and permissions not in PERMISSIONS:
            raise BadRequest(f"{where}: permissions must be one of {', '.join(PERMISSIONS)}")
        budget = parse_budget(raw["budget"], f"{where}: budget") if "budget" in raw else None
        nap = raw.get("hibernate_after_seconds")
        if nap is not None and (isinstance(nap, bool) or not isinstance(nap, int | float)
                                or not 0 <= nap <= HIBERNATE_MAX):
            raise BadRequest(f"{where}: hibernate_after_seconds must be a number of seconds in 0..{HIBERNATE_MAX} "
                             f"(0: never)")
        return cls(driver=driver, allowed_recipients=allowed, allowed_tools=tools, memory_mb=memory_mb,
                   pids=pids, network_allow=allow, repo=repo, permissions=permissions, budget=budget,
                   hibernate_after_seconds=None if nap is None else float(nap),
                   placement=parse_placement_json(raw["placement"], where) if "placement" in raw else None)

    def limits(self, memory_mb: int, pids: int) -> Limits:
        """This agent's limits, the daemon's defaults where it sets none."""
        return Limits(self.memory_mb or memory_mb, self.pids or pids)

    def to_json(self) -> str:
        out: dict[str, Any] = {}
        if self.driver is not None:
            out["driver"] = self.driver
        if self.repo is not None:
            out["repo"] = self.repo
        if self.permissions is not None:
            out["permissions"] = self.permissions
        if self.allowed_recipients is not None:
            out["allowed_recipients"] = list(self.allowed_recipients)
        if self.allowed_tools is not None:
            out["allowed_tools"] = list(self.allowed_tools)
        limits = {k: v for k, v in (("memory_mb", self.memory_mb), ("pids", self.pids)) if v is not None}
        if limits:
            out["limits"] = limits
        if self.network_allow:
            out["network"] = {"allow": list(self.network_allow)}
        if self.budget is not None:
            out["budget"] = self.budget.to_wire()
        if self.hibernate_after_seconds is not None:
            out["hibernate_after_seconds"] = self.hibernate_after_seconds
        if self.placement is not None and not self.placement.empty:
            out["placement"] = self.placement.to_json()
        return json.dumps(out, indent=2) + "\n"

    def hibernate_after(self, default: float) -> float:
        """Seconds with no turn before its harness is stopped (issue 17): its own, else ``default``."""
        return default if self.hibernate_after_seconds is None else self.hibernate_after_seconds


def _below(parent: Callable[[StatePaths, AgentName], Path], leaf: str) -> Callable[[StatePaths, AgentName], Path]:
    """A `StatePaths` method: ``leaf`` below what ``parent`` gives for the agent."""

    def path(self: StatePaths, name: AgentName) -> Path:
        return parent(self, name) / leaf

    return path


@dataclass(frozen=True)
class StatePaths:
    root: Path
    agents_root: Path | None = None  # --agents-dir; None: <root>/agents

    @property
    def db(self) -> Path:
        return self.root / "hive.sqlite"

    @property
    def admin_socket(self) -> Path:
        return self.root / "run" / "admin.sock"

    @property
    def agents(self) -> Path:
        """The dir every agent's own dir is in (``--agents-dir``, else ``<state>/agents``)."""
        return self.root / "agents" if self.agents_root is None else self.agents_root

    @property
    def applied_root(self) -> Path:
        return self.root / "applied"

    def agent(self, name: AgentName) -> Path:
        return agent_dir(self.agents, name)

    # An agent's dirs and files, each below another: (the method it is below, its name there).
    config_dir = _below(agent, "config")
    state = _below(agent, "state")  # the agent's HOME, its own uid's
    run = _below(agent, "run")
    workspace = _below(agent, "work")  # the agent's own uid's
    api_socket = _below(run, "api.sock")
    proxy_socket = _below(run, "proxy.sock")
    socket = _below(run, "hive.sock")
    mcp_socket = _below(run, "mcp.sock")  # the daemon's MCP server of the agent's tools (issue 17)
    # Bound by the harness in the agent's own dir: never trusted, reached without links.
    web_socket = _below(state, WEB_SOCKET)
    harness_log = _below(agent, "harness.log")  # daemon-owned, outside anything the agent can write

    def applied(self, name: AgentName) -> Path:
        return agent_dir(self.applied_root, name)

    def create_agent(self, name: AgentName, config: AgentConfig) -> None:
        """Lay out a new agent's dirs; an existing config (a revived agent) is kept."""
        for d in (self.config_dir(name), self.state(name), self.workspace(name), self.run(name)):
            d.mkdir(parents=True, exist_ok=True)
        from hyperhive.sandbox.safefs import read_nofollow

        cfg = self.config_dir(name) / CONFIG_FILE
        if not cfg.exists() and not cfg.is_symlink():
            cfg.write_text(config.to_json())
        applied = self.applied(name)
        if not (applied / CONFIG_FILE).exists():
            applied.mkdir(parents=True, exist_ok=True)
            # A kept config's agent.json is read without following a link (the
            # applied copy is readable inside the agent's sandbox); parsed, so
            # only a valid config is carried over.
            raw = read_nofollow(self.config_dir(name), CONFIG_FILE)
            try:
                kept = AgentConfig.from_json(raw.decode()) if raw is not None else config
            except (BadRequest, UnicodeDecodeError):
                kept = config
            (applied / CONFIG_FILE).write_text(kept.to_json())

    def load_applied(self, name: AgentName) -> AgentConfig:
        f = self.applied(validate_name(name)) / CONFIG_FILE
        if not f.exists():
            return AgentConfig()
        return AgentConfig.from_json(f.read_text(), where=str(f))
