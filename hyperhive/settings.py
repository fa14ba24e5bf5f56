"""Settings: one declared entry each, as datasette does.

The `Settings` dataclass body *is* the declared list: every field is an
`_entry(default, help, …)` that gives its default, its type (the default's),
where it is a flag (``scope``: ``global`` on every verb, before or after it;
``serve`` on `hive serve`), its environment variable (``env``, where it has
one), its choices and bounds. `SETTINGS` is that list, read back from the
fields. A value comes from the flag, else the environment variable (empty
counts as unset), else the default; a value the daemon cannot use is a
`BadSetting` (`serve` prints it as one line and exits 1).

Variables read outside the daemon's start (the nixos backend's, the claude
driver's, in the harness) are declared here too, as plain entries
(`ENV_SETTINGS`), each read with `Setting.read(env)`.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from hyperhive.errors import BadSetting
from hyperhive.paths import MEMORY_MB_RANGE, PIDS_RANGE

__all__ = [
    "AGENT_TEMPLATE", "CLAUDE_BINARY", "CLAUDE_SILENCE_SECONDS", "ENV_SETTINGS", "NIXOS_CONF_DIR", "NIXOS_FLAKE",
    "NIXOS_POLL_SECONDS", "SETTINGS", "Setting", "Settings", "add_arguments", "default_state_dir", "fill_globals",
    "from_args", "setting",
]

T = TypeVar("T")
Scope = Literal["global", "serve", "env"]


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One declared setting; its type is its default's."""

    name: str
    default: T
    help: str
    env: str = ""  # the environment variable read when no flag is given ("": none)
    scope: Scope = "serve"  # global: a flag of every verb; serve: of `hive serve`; env: no flag
    choices: tuple[str, ...] | None = None
    bounds: tuple[float, float] | None = None  # numbers: lo <= value <= hi (floats: >= 0 unless given)
    repeat: bool = False  # the flag may be given again; the values join with commas

    @property
    def type(self) -> type[Any]:
        return type(self.default)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def parse(self, raw: str, where: str) -> T:
        if self.type is bool:
            return _to_bool(raw, where)  # type: ignore[return-value]
        try:
            value: T = self.type(raw)
        except ValueError:
            raise BadSetting(f"{where}: {raw!r} is not {'an int' if self.type is int else 'a ' + self.type.__name__}"
                             ) from None
        return value

    def read(self, env: Mapping[str, str] | None = None) -> T:
        """The value from the environment variable (``os.environ`` by default), else the default."""
        raw = (os.environ if env is None else env).get(self.env, "") if self.env else ""
        if not raw:
            return self.default
        value = self.parse(raw, "$" + self.env)
        try:
            self.check(value)
        except BadSetting as exc:
            raise BadSetting(f"${self.env}: {exc.message}") from None
        return value

    def check(self, value: Any) -> None:
        """Raise BadSetting unless ``value`` is one this setting takes."""
        if self.choices and value not in self.choices:
            raise BadSetting(f"{self.name} must be one of {', '.join(self.choices)}, got {value!r}")
        bounds = self.bounds or ((0.0, math.inf) if self.type is float else None)
        if bounds and not bounds[0] <= value <= bounds[1]:
            lo, hi = (int(b) if b != math.inf and b == int(b) else b for b in bounds)
            want = f">= {lo}" if hi == math.inf else f"in {lo}..{hi}"
            raise BadSetting(f"{self.name} must be {want}, got {value}")


_BOOLS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def _to_bool(raw: str, where: str) -> bool:
    """A switch's value: 1/true/yes/on or 0/false/no/off (any case)."""
    value = _BOOLS.get(raw.strip().lower())
    if value is None:
        raise BadSetting(f"{where}: {raw!r} is not a yes or a no (1/true/yes/on, 0/false/no/off)")
    return value


def _bool_arg(raw: str) -> bool:
    try:
        return _to_bool(raw, "value")
    except BadSetting as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def setting(default: T, help: str, **spec: Any) -> T:  # noqa: A002 - the help text, as argparse calls it
    """A field of `Settings` declared with everything `Setting` holds."""
    return field(default=default, metadata={"setting": {"help": help, **spec}})


# A host name or address, optionally with a port: what a Host header carries.
_HOST_ENTRY = re.compile(r"(?:[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?")
_REPO_NIX = Path(__file__).resolve().parents[1] / "nix"


@dataclass(frozen=True)
class Settings:
    state_dir: Path = setting(Path("./.hive"), "state dir", env="HYPERHIVE_STATE_DIR", scope="global")
    listen: str = setting("127.0.0.1:7800", "dashboard address HOST:PORT")
    backend: str = setting("local", "container backend: local (this host), nixos (a container each), ray (each "
                           "agent an actor on a node of a Ray cluster, issue 18: needs pip install "
                           "'hyperhive[ray]')", choices=("local", "nixos", "ray"))
    ray_address: str = setting("auto", "ray backend: the Ray cluster to join (HOST:PORT of its head, or auto: "
                               "$RAY_ADDRESS, then the cluster ray start made on this host)")
    driver: str = setting("builtin", "model driver for new agents", choices=("builtin", "claude"))
    sandbox: str = setting("auto", "local backend: wrap harnesses in bubblewrap (auto = when bwrap works)",
                           choices=("auto", "on", "off"))
    keep_agents: bool = setting(
        False, "a stop (SIGTERM) leaves every harness running for the next daemon to adopt, as a handover "
        "(SIGUSR2, systemctl reload) does; off: a stop stops the agents (their desired state is kept). A "
        "switch: --keep-agents alone, or --keep-agents yes|no")
    log_format: str = setting(
        "auto", "how the daemon writes its log: console (readable lines), json (one object per line, for "
        "journald), auto (console on a terminal; json under systemd or into a file or pipe)",
        env="HYPERHIVE_LOG_FORMAT", choices=("auto", "console", "json"))
    db_synchronous: str = setting(
        "full", "how hard hive.sqlite holds a commit before a send is acknowledged: full (synced to disk: every "
        "acknowledged message survives a power loss or an OS crash), normal (faster; survives a crash of the "
        "daemon, but a power loss or an OS crash may lose the last acknowledged messages)",
        choices=("full", "normal"))
    recv_default_seconds: float = setting(30.0, "recv wait when the caller gives none")
    recv_cap_seconds: float = setting(180.0, "longest recv wait a caller may ask for")
    restart_backoff_seconds: float = setting(1.0, "first delay before restarting a crashed harness")
    restart_backoff_max_seconds: float = setting(30.0, "longest delay between crash restarts")
    agent_port_base: int = setting(8100, "first port of the 900 agent web UI ports", bounds=(1024, 65535 - 900))
    vacuum_interval_seconds: float = setting(
        3600.0, "seconds between retention sweeps (one runs at start; 0: only that one)")
    message_retention_days: float = setting(
        30.0, "delivered messages older than this are dropped by the retention sweep (undelivered never are)")
    boot_timeout_seconds: float = setting(
        600.0, "longest wait for the kept containers to start at boot (nixos containers build first)",
        bounds=(1, math.inf))
    token_file: str = setting(
        "", "file holding the operator token; required when --listen is not loopback; without one the daemon "
        "keeps its own in run/operator.token", env="HYPERHIVE_TOKEN_FILE")
    allowed_host: str = setting(
        "", "another name the dashboard answers to in the Host header (NAME or NAME:PORT, repeatable or "
        "comma-separated), e.g. the name a reverse proxy or a remote browser uses; localhost, 127.0.0.1 and "
        "the --listen address always are", repeat=True)
    heartbeat_seconds: float = setting(
        5.0, "how often harnesses report their state; three missed beats make an agent unresponsive")
    disk_interval_seconds: float = setting(
        60.0, "how often each agent's disk use (its whole dir, on hive ls and /metrics) is measured again, at "
        "most; each walk is bounded (200000 entries, 2 s: past that the figure is a lower bound)",
        bounds=(0.5, 24 * 3600))
    hibernate_after_seconds: float = setting(
        600.0, "an agent with no turn for this long has its harness stopped and shows hibernating (its desired "
        "state stays running); the first message for it, or an operator's verb, starts it again; its "
        "agent.json's \"hibernate_after_seconds\" overrides this (0: never)", bounds=(0, 365 * 24 * 3600))
    max_active_turns: int = setting(0, "most agents' turns running at once; the rest wait in order (0: no cap)",
                                    bounds=(0, math.inf))
    permission_ttl_seconds: float = setting(
        600.0, "how long a tool permission question (\"permissions\": \"ask\") waits for the operator before "
        "it is denied", bounds=(1, 7 * 24 * 3600))
    pull_max_bundle_bytes: int = setting(
        1 << 30, "most bytes one pull of an agent's branch into the operator's repository may carry (its "
        "bundle); a bigger one is refused", bounds=(1 << 20, 1 << 40))
    pull_timeout_seconds: float = setting(
        300.0, "longest one pull of an agent's branch may take writing its bundle (and as long again "
        "reading it into the operator's repository)", bounds=(1, 24 * 3600))
    prices: str = setting(
        "", "JSON file of model prices in dollars per million tokens, {model: {input, output, cache_read, "
        "cache_write}}, over the built-in table of Claude models; empty: the built-in table")
    usage_retention_days: float = setting(
        90.0, "model calls (their tokens and cost) older than this are folded into per-agent totals by the "
        "retention sweep (at least 8: a week's budget is counted from them)", bounds=(8, 100 * 365))
    fleet_budget_usd: float = setting(
        0.0, "the whole fleet's budget in dollars per --fleet-budget-per; past it no agent starts a turn "
        "(0: none)", bounds=(0, 1e6))
    fleet_budget_per: str = setting("day", "the fleet budget's window", choices=("day", "week", "total"))
    budget_question_ttl_seconds: float = setting(
        3600.0, "how long the question an agent's crossed budget asks waits for the operator before its "
        "default (stop the agent) applies", bounds=(1, 7 * 24 * 3600))
    hard_cap_factor: float = setting(
        1.5, "a running turn is cancelled once its agent (or the fleet) has spent this many times its budget",
        bounds=(1, 100))
    min_free_mb: int = setting(
        64, "past this much free space left where hive.sqlite lives, the agents' sends are refused "
        "(storage_unavailable) and the rest is kept for the operator's and the daemon's writes (0: no floor)",
        bounds=(0, 1 << 20))
    agents_dir: str = setting(
        "", "where every agent's own dir is (<dir>/<name>/: its home, workspace, sockets), e.g. on another "
        "filesystem than hive.sqlite's, so an agent that fills its disk does not fill the store's; an absolute "
        "path, not a symlink, made 0711 if missing; once agents live there the daemon refuses to start with "
        "another; empty: <state dir>/agents", env="HYPERHIVE_AGENTS_DIR")
    notify: str = setting("", "command run with each event that waits for the operator (a question, an "
                          "approval, a crash) as JSON on stdin; empty: none")
    agent_memory_mb: int = setting(4096, "memory limit of each agent's whole process tree, in MB, where its "
                                   "agent.json sets none (\"limits\": {\"memory_mb\": N})", bounds=MEMORY_MB_RANGE)
    agent_pids: int = setting(512, "most processes each agent may run at once, where its agent.json sets "
                              "none (\"limits\": {\"pids\": N})", bounds=PIDS_RANGE)
    agent_uid_base: int = setting(1_900_000_000, "when the daemon is root: first of the host uids given to "
                                  "agents (one each, sticky)", bounds=(1000, (1 << 31) - (1 << 16)))
    proxy_resolve: str = setting("", "egress proxy: NAME:PORT=ADDR[,…] answers for these names on these "
                                 "ports (like curl --resolve), which may then be private or loopback "
                                 "addresses; empty: none")
    agent_listen: str = setting(
        "", "HOST:PORT where agents on other nodes reach the daemon (issue 18): TLS with the daemon's own CA "
        "(<state dir>/tls/ca.pem, pinned by each agent's relay), each connection authenticated by its agent's "
        "secret; port 0: any free one (written to run/agent-listen.port); empty: off")

    def __post_init__(self) -> None:
        for s in SETTINGS:
            s.check(getattr(self, s.name))
        from hyperhive.sandbox.allowlist import parse_resolve

        try:
            parse_resolve(self.proxy_resolve)
        except ValueError as exc:
            raise BadSetting(f"proxy_resolve: {exc}") from None
        for h in self.allowed_hosts:
            if not _HOST_ENTRY.fullmatch(h):
                raise BadSetting(f"allowed_host: {h!r} is not a host name, an address or NAME:PORT")
        if self.backend == "ray" and not self.agent_listen:  # issue 18: a node reaches the daemon over TCP
            raise BadSetting("backend ray needs --agent-listen HOST:PORT: the address every Ray node reaches this "
                             "daemon at (its agents' relays connect there over TLS)")
        if self.agent_listen:
            from hyperhive.agent_wire import parse_address

            try:
                parse_address(self.agent_listen)
            except ValueError as exc:
                raise BadSetting(f"agent_listen {exc}") from None
        host, sep, port = self.listen.rpartition(":")
        if not sep or not host or not (port.isascii() and port.isdigit()) or int(port) > 65535:
            raise BadSetting(f"listen must be HOST:PORT, got {self.listen!r}")

    @property
    def listen_host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def allowed_hosts(self) -> tuple[str, ...]:
        return tuple(h.strip().lower() for h in self.allowed_host.split(",") if h.strip())

    @property
    def listen_port(self) -> int:
        return int(self.listen.rpartition(":")[2])


SETTINGS: tuple[Setting[Any], ...] = tuple(
    Setting(f.name, f.default, **f.metadata["setting"]) for f in fields(Settings))
_BY_NAME = {s.name: s for s in SETTINGS}

# --- read outside the daemon's start (each where it is used) -------------------------------
NIXOS_FLAKE = Setting(
    "nixos_flake", f"path:{_REPO_NIX.parent}?dir=nix" if (_REPO_NIX / "flake.nix").exists() else "",
    "nixos backend: flake ref of the hive's nix/ flake, the input of every agent flake",
    env="HYPERHIVE_FLAKE", scope="env")
AGENT_TEMPLATE = Setting("agent_template", _REPO_NIX / "agent.nix",
                         "nixos backend: the agent.nix copied into a new agent's applied dir",
                         env="HYPERHIVE_AGENT_TEMPLATE", scope="env")
NIXOS_CONF_DIR = Setting("nixos_conf_dir", Path("/etc/nixos-containers"), "where nixos-container keeps <c>.conf",
                         env="HYPERHIVE_NIXOS_CONF_DIR", scope="env")
NIXOS_POLL_SECONDS = Setting("nixos_poll_seconds", 2.0, "nixos backend: seconds between the machine watcher's "
                             "polls", env="HYPERHIVE_NIXOS_POLL_SECONDS", scope="env")
CLAUDE_BINARY = Setting("claude", "claude", "the Claude Code CLI the claude driver runs (a path, or a name "
                        "on PATH); passed into the sandbox", env="HYPERHIVE_CLAUDE", scope="env")
CLAUDE_SILENCE_SECONDS = Setting(
    "claude_silence_seconds", 1200.0, "claude driver: a turn whose CLI says nothing for this long is cancelled",
    env="HYPERHIVE_CLAUDE_SILENCE_SECONDS", scope="env")
ENV_SETTINGS: tuple[Setting[Any], ...] = (
    NIXOS_FLAKE, AGENT_TEMPLATE, NIXOS_CONF_DIR, NIXOS_POLL_SECONDS, CLAUDE_BINARY, CLAUDE_SILENCE_SECONDS)


def default_state_dir(env: Mapping[str, str] | None = None) -> Path:
    return _BY_NAME["state_dir"].read(env)  # type: ignore[no-any-return]


# --- flags -------------------------------------------------------------------------------------

class _Join(argparse.Action):
    """A repeatable string flag: every value given, joined with commas."""

    def __call__(self, parser: argparse.ArgumentParser, ns: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        before = getattr(ns, self.dest, "")
        setattr(ns, self.dest, ",".join(v for v in (before, values) if v))


def _help(s: Setting[Any]) -> str:
    default = "empty" if s.default == "" else s.default
    return f"{s.help} (default: ${s.env}, else {default})" if s.env else f"{s.help} (default: {default})"


def add_arguments(parser: argparse.ArgumentParser, scope: Scope = "serve") -> None:
    """The flags of ``scope``'s settings. A flag left out leaves no attribute
    (`argparse.SUPPRESS`): `from_args` then reads the environment or the default,
    and a global flag given before the verb is not overwritten by the verb's."""
    for s in SETTINGS:
        if s.scope != scope:
            continue
        if s.type is bool:  # a switch: the flag alone is yes
            parser.add_argument(s.flag, dest=s.name, default=argparse.SUPPRESS, type=_bool_arg, nargs="?",
                                const=True, metavar="yes|no", help=_help(s).replace("%", "%%"))
            continue
        parser.add_argument(
            s.flag, dest=s.name, default=argparse.SUPPRESS, type=s.type, choices=s.choices,
            help=_help(s).replace("%", "%%"), action=_Join if s.repeat else "store")


def global_parser() -> argparse.ArgumentParser:
    """The parent parser of every verb: the global flags work before the verb and after it."""
    p = argparse.ArgumentParser(add_help=False)
    add_arguments(p, "global")
    return p


def _value(s: Setting[Any], ns: argparse.Namespace, env: Mapping[str, str] | None) -> Any:
    return getattr(ns, s.name) if hasattr(ns, s.name) else s.read(env)


def fill_globals(ns: argparse.Namespace, env: Mapping[str, str] | None = None) -> argparse.Namespace:
    """Set every global setting the command line left out (environment, else default)."""
    for s in SETTINGS:
        if s.scope == "global":
            setattr(ns, s.name, _value(s, ns, env))
    return ns


def from_args(ns: argparse.Namespace, env: Mapping[str, str] | None = None) -> Settings:
    """The settings of a parsed command line: flag, else environment, else default."""
    values = {s.name: _value(s, ns, env) for s in SETTINGS}
    values["state_dir"] = Path(values["state_dir"]).absolute()
    return Settings(**values)
