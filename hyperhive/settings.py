"""Daemon settings: one declared list with defaults and help, validated at load
into a frozen dataclass. CLI flags for `hive serve` are generated from it."""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

__all__ = ["SETTINGS", "Setting", "Settings", "add_arguments", "default_state_dir", "from_args"]


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str
    type: Any = str
    choices: tuple[str, ...] | None = None
    repeat: bool = False  # the flag may be given again; the values join with commas


# A host name or address, optionally with a port: what a Host header carries.
_HOST_ENTRY = re.compile(r"(?:[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?")


def default_state_dir() -> Path:
    return Path(os.environ.get("HYPERHIVE_STATE_DIR") or "./.hive")


SETTINGS: tuple[Setting, ...] = (
    Setting("listen", "127.0.0.1:7800", "dashboard address HOST:PORT"),
    Setting("backend", "local", "container backend", choices=("local", "nixos")),
    Setting("driver", "builtin", "model driver for new agents", choices=("builtin", "claude")),
    Setting("sandbox", "auto", "local backend: wrap harnesses in bubblewrap (auto = when bwrap works)",
            choices=("auto", "on", "off")),
    Setting("recv_default_seconds", 30.0, "recv wait when the caller gives none", float),
    Setting("recv_cap_seconds", 180.0, "longest recv wait a caller may ask for", float),
    Setting("restart_backoff_seconds", 1.0, "first delay before restarting a crashed harness", float),
    Setting("restart_backoff_max_seconds", 30.0, "longest delay between crash restarts", float),
    Setting("agent_port_base", 8100, "first port of the 900 agent web UI ports", int),
    Setting("vacuum_interval_seconds", 3600.0,
            "seconds between retention sweeps (one runs at start; 0: only that one)", float),
    Setting("token_file", "", "file holding the operator token (also $HYPERHIVE_TOKEN_FILE); "
            "required when --listen is not loopback; without one the daemon keeps its own in run/operator.token"),
    Setting("allowed_host", "", "another name the dashboard answers to in the Host header (NAME or NAME:PORT, "
            "repeatable or comma-separated), e.g. the name a reverse proxy or a remote browser uses; "
            "localhost, 127.0.0.1 and the --listen address always are", repeat=True),
    Setting("heartbeat_seconds", 5.0, "how often harnesses report their state; three missed beats "
            "make an agent unresponsive", float),
    Setting("max_active_turns", 0, "most agents' turns running at once; the rest wait in order "
            "(0: no cap)", int),
    Setting("notify", "", "command run with each event that waits for the operator (a question, an "
            "approval, a crash) as JSON on stdin; empty: none"),
    Setting("agent_memory_mb", 4096, "memory limit of each agent's whole process tree, in MB, where its "
            "agent.json sets none (\"limits\": {\"memory_mb\": N})", int),
    Setting("agent_pids", 512, "most processes each agent may run at once, where its agent.json sets none "
            "(\"limits\": {\"pids\": N})", int),
    Setting("agent_uid_base", 1_900_000_000, "when the daemon is root: first of the host uids given to "
            "agents (one each, sticky)", int),
    Setting("proxy_resolve", "", "egress proxy: NAME:PORT=ADDR[,…] answers for these names on these ports "
            "(like curl --resolve), which may then be private or loopback addresses; empty: none"),
)


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    listen: str = "127.0.0.1:7800"
    backend: str = "local"
    driver: str = "builtin"
    sandbox: str = "auto"
    recv_default_seconds: float = 30.0
    recv_cap_seconds: float = 180.0
    restart_backoff_seconds: float = 1.0
    restart_backoff_max_seconds: float = 30.0
    agent_port_base: int = 8100
    vacuum_interval_seconds: float = 3600.0
    heartbeat_seconds: float = 5.0
    max_active_turns: int = 0
    notify: str = ""
    token_file: str = ""
    allowed_host: str = ""
    agent_memory_mb: int = 4096
    agent_pids: int = 512
    agent_uid_base: int = 1_900_000_000
    proxy_resolve: str = ""

    def __post_init__(self) -> None:
        for s in SETTINGS:
            value = getattr(self, s.name)
            if s.choices and value not in s.choices:
                raise ValueError(f"{s.name} must be one of {', '.join(s.choices)}, got {value!r}")
            if s.type is float and value < 0:
                raise ValueError(f"{s.name} must be >= 0, got {value}")
        if not 1024 <= self.agent_port_base <= 65535 - 900:
            raise ValueError(f"agent_port_base must be in 1024..{65535 - 900}, got {self.agent_port_base}")
        from hyperhive.paths import MEMORY_MB_RANGE, PIDS_RANGE

        for name, (lo, hi) in (("agent_memory_mb", MEMORY_MB_RANGE), ("agent_pids", PIDS_RANGE)):
            if not lo <= getattr(self, name) <= hi:
                raise ValueError(f"{name} must be in {lo}..{hi}, got {getattr(self, name)}")
        if not 1000 <= self.agent_uid_base <= (1 << 31) - (1 << 16):
            raise ValueError(f"agent_uid_base must be in 1000..{(1 << 31) - (1 << 16)}, got {self.agent_uid_base}")
        from hyperhive.sandbox.allowlist import parse_resolve

        try:
            parse_resolve(self.proxy_resolve)
        except ValueError as exc:
            raise ValueError(f"proxy_resolve: {exc}") from None
        for h in self.allowed_hosts:
            if not _HOST_ENTRY.fullmatch(h):
                raise ValueError(f"allowed_host: {h!r} is not a host name, an address or NAME:PORT")
        host, sep, port = self.listen.rpartition(":")
        if not sep or not host or not (port.isascii() and port.isdigit()) or int(port) > 65535:
            raise ValueError(f"listen must be HOST:PORT, got {self.listen!r}")

    @property
    def listen_host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def allowed_hosts(self) -> tuple[str, ...]:
        return tuple(h.strip().lower() for h in self.allowed_host.split(",") if h.strip())

    @property
    def listen_port(self) -> int:
        return int(self.listen.rpartition(":")[2])


assert {s.name for s in SETTINGS} | {"state_dir"} == {f.name for f in fields(Settings)}


class _Join(argparse.Action):
    """A repeatable string flag: every value given, joined with commas."""

    def __call__(self, parser: argparse.ArgumentParser, ns: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        before = getattr(ns, self.dest, None)
        setattr(ns, self.dest, ",".join(v for v in (before if before != self.default else "", values) if v))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for s in SETTINGS:
        parser.add_argument(
            "--" + s.name.replace("_", "-"), dest=s.name, default=s.default, type=s.type,
            choices=s.choices, help=f"{s.help} (default: {s.default})",
            action=_Join if s.repeat else "store",
        )


def from_args(ns: argparse.Namespace) -> Settings:
    values = {s.name: getattr(ns, s.name) for s in SETTINGS}
    return Settings(state_dir=Path(ns.state_dir).absolute(), **values)
