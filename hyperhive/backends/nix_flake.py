"""What the nixos backend writes for one agent, as pure functions.

- ``container_name``: nixos-container refuses names over 11 characters (the
  host side of the container's veth is ``ve-<name>`` and an interface name has
  at most 15), while agent names go up to 31. The mapping is deterministic:
  a name of at most 8 characters becomes ``hh-<name>``; a longer one (or one
  ending in ``-``, which a NixOS hostName may not) becomes ``hh`` + its first
  4 characters + 5 hex digits of its sha256. The third
  character tells the two forms apart (``-`` vs the name's first letter), so a
  short name never meets a long one; two long names sharing a 4-character
  prefix collide with odds of 1 in 2**20, and ``create`` refuses a collision.
- ``agent_flake``: ``applied/<name>/flake.nix``, the container's NixOS system:
  the hive's harness base, the agent's own ``agent.nix``, and its identity
  (harness name and role, git user). Regenerated on every create and rebuild.
- ``container_conf`` (``bind_flags``, ``conf_with``): the lines the backend
  writes into the container's ``/etc/nixos-containers/<c>.conf``.
  nixos-container has no bind-mount option for imperative containers;
  ``container@.service`` passes ``EXTRA_NSPAWN_FLAGS`` to systemd-nspawn,
  which is where the declarative ``bindMounts`` end up too. Bound: the
  agent's run dir read-only (the daemon's sockets: hive.sock, api.sock,
  proxy.sock; a socket needs no write access to its mount to be connected
  to, and nothing in the container has anything to write there), its state
  dir and workspace read-write, its applied config read-only; nothing else
  of the hive or the host's is. The network is private and holds only
  loopback (``PRIVATE_NETWORK=1`` with no address, bridge, port or
  interface: no veth is made), so the agent reaches the outside only through
  those sockets (the harness relays them on 127.0.0.1 inside).
- ``parse_exit_record`` / ``exit_reason``: the harness unit's ExecStopPost
  writes ``$SERVICE_RESULT $EXIT_CODE $EXIT_STATUS`` to
  ``<state>/harness.exit``; a result of ``oom-kill`` there, or on the host's
  ``container@<c>.service``, is reported as "out of memory".
"""

from __future__ import annotations

import hashlib
import re
import signal
from dataclasses import dataclass

from hyperhive.errors import BadRequest
from hyperhive.names import MANAGER, AgentName

__all__ = [
    "CONTAINER_APPLIED",
    "CONTAINER_RUN",
    "CONTAINER_STATE",
    "CONTAINER_WORK",
    "EXIT_RECORD",
    "LOOPBACK_ONLY",
    "OUT_OF_MEMORY",
    "AgentFlake",
    "agent_flake",
    "bind_flags",
    "conf_with",
    "container_conf",
    "container_name",
    "container_unit",
    "exit_reason",
    "exit_service_result",
    "harness_unit",
    "nix_string",
    "parse_exit_record",
]

# Where the agent's host dirs appear inside its container (harness-base.nix
# receives them from the generated flake, so both sides always agree).
CONTAINER_RUN = "/hive/run"
CONTAINER_STATE = "/hive/state"
CONTAINER_APPLIED = "/hive/applied"
CONTAINER_WORK = "/hive/work"
EXIT_RECORD = "harness.exit"
OOM_RESULT = "oom-kill"  # systemd's Result= / $SERVICE_RESULT after an OOM kill
OUT_OF_MEMORY = "out of memory"  # the reason handed to on_exit (as the local backend's)
# container@.service's start script makes a veth only when one of the
# address keys is set, joins a bridge / forwards ports / moves interfaces in
# only when those are: all empty, PRIVATE_NETWORK=1 leaves the container a
# network namespace of its own with loopback alone. nixos-container create
# writes an address pair (10.233.x.1/.2); these lines replace it.
LOOPBACK_ONLY: dict[str, str] = {
    "PRIVATE_NETWORK": "1",
    **{key: "" for key in ("HOST_ADDRESS", "LOCAL_ADDRESS", "HOST_ADDRESS6", "LOCAL_ADDRESS6",
                           "LOCAL_MAC_ADDRESS", "HOST_BRIDGE", "HOST_PORT", "NETWORK_NAMESPACE_PATH",
                           "INTERFACES", "MACVLANS")},
}
MAX_CONTAINER_NAME = 11
_SHORT = MAX_CONTAINER_NAME - len("hh-")


def container_name(name: AgentName) -> str:
    """The nixos-container name of agent ``name`` (see the module docstring)."""
    if len(name) <= _SHORT and not name.endswith("-"):
        return f"hh-{name}"
    digest = hashlib.sha256(name.encode()).hexdigest()[:5]
    return f"hh{name[:4]}{digest}"


def container_unit(name: AgentName) -> str:
    """The host's systemd unit of the container (limits and its Result live there)."""
    return f"container@{container_name(name)}.service"


def harness_unit(name: AgentName) -> str:
    """The systemd unit running the harness inside the container."""
    return "hive-m1nd.service" if name == MANAGER else "hive-ag3nt.service"


def nix_string(value: str) -> str:
    """``value`` as a double-quoted Nix string literal."""
    out = value.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${")
    out = out.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f'"{out}"'


@dataclass(frozen=True)
class AgentFlake:
    name: AgentName
    driver: str
    hyperhive_flake: str  # flake reference of the hive's own flake (nix/flake.nix)
    system: str = "x86_64-linux"
    git_email_domain: str = "hyperhive.local"


def agent_flake(spec: AgentFlake) -> str:
    """The text of ``applied/<name>/flake.nix``."""
    role = "manager" if spec.name == MANAGER else "agent"
    s = nix_string
    return f"""\
# Generated by hyperhive for agent {spec.name} (container {container_name(spec.name)}).
# Rewritten on every rebuild: put this agent's own settings in ./agent.nix.
{{
  description = {s("hyperhive agent " + spec.name)};

  inputs.hyperhive.url = {s(spec.hyperhive_flake)};
  inputs.nixpkgs.follows = "hyperhive/nixpkgs";

  outputs = {{ self, hyperhive, nixpkgs }}: {{
    nixosConfigurations.container = nixpkgs.lib.nixosSystem {{
      system = {s(spec.system)};
      modules = [
        hyperhive.nixosModules.harnessBase
        ./agent.nix
        ({{ lib, ... }}: {{
          networking.hostName = lib.mkDefault {s(container_name(spec.name))};
          hyperhive.harness = {{
            name = {s(spec.name)};
            role = {s(role)};
            driver = {s(spec.driver)};
            socketDir = {s(CONTAINER_RUN)};
            stateDir = {s(CONTAINER_STATE)};
            workspaceDir = {s(CONTAINER_WORK)};
            appliedDir = {s(CONTAINER_APPLIED)};
          }};
          # Each agent commits as itself, whatever agent.nix says.
          programs.git.config.user = {{
            name = lib.mkForce {s(spec.name)};
            email = lib.mkForce {s(spec.name + "@" + spec.git_email_domain)};
          }};
        }})
      ];
    }};
  }};
}}
"""


_UNSAFE_PATH = re.compile(r'[\s:"\'\\$`]')


def bind_flags(run_dir: str, state_dir: str, work_dir: str, applied_dir: str) -> str:
    """systemd-nspawn flags binding one agent's host dirs into its container
    (what is bound how, and why: the module docstring)."""
    for path in (run_dir, state_dir, work_dir, applied_dir):
        # nspawn splits on ':' and the conf file is a shell-style assignment.
        if not path.startswith("/") or _UNSAFE_PATH.search(path):
            raise BadRequest(f"cannot bind {path!r} into a container: needs an absolute path "
                             "without whitespace, quotes, ':', '$', '`' or '\\'")
    return " ".join((
        f"--bind-ro={run_dir}:{CONTAINER_RUN}",
        f"--bind={state_dir}:{CONTAINER_STATE}",
        f"--bind={work_dir}:{CONTAINER_WORK}",
        f"--bind-ro={applied_dir}:{CONTAINER_APPLIED}",
    ))


def conf_with(text: str, overrides: dict[str, str]) -> str:
    """``text`` (a container's KEY=value conf) with ``overrides`` set, other lines kept."""
    lines = [ln for ln in text.splitlines() if ln.partition("=")[0] not in overrides]
    for key, value in overrides.items():
        lines.append(f'{key}="{value}"' if " " in value else f"{key}={value}")
    return "\n".join(lines) + "\n"


def container_conf(text: str, nspawn_flags: str) -> str:
    """The container's conf ``text`` with a loopback-only private network and
    ``nspawn_flags`` (``bind_flags``); what nixos-container wrote otherwise kept."""
    return conf_with(text, {**LOOPBACK_ONLY, "EXTRA_NSPAWN_FLAGS": nspawn_flags})


def exit_service_result(text: str) -> str | None:
    """The ``$SERVICE_RESULT`` of an exit record (``success``, ``exit-code``, ``oom-kill`` …)."""
    parts = text.split()
    return parts[0] if len(parts) == 3 else None


def exit_reason(record: str | None, unit_result: str | None) -> str | None:
    """The reason "out of memory" when the harness unit (its exit record) or
    the host's container unit (its ``Result=``) ended by an OOM kill, else None.

    Both are asked because either may be the one that saw it: an OOM kill of
    the harness or of anything it runs fails the harness unit (OOMPolicy=stop,
    harness-base.nix), which records it and powers the machine off cleanly;
    a kill that took the machine down whole leaves it on the host's unit.
    """
    results = {unit_result, exit_service_result(record) if record is not None else None}
    return OUT_OF_MEMORY if OOM_RESULT in results else None


def parse_exit_record(text: str) -> int | None:
    """The harness's exit as a returncode (negative: killed by that signal), or None."""
    parts = text.split()
    if len(parts) != 3:
        return None
    _result, code, status = parts
    if code == "exited" and status.isdigit():
        return int(status)
    if code in ("killed", "dumped"):
        try:
            return -signal.Signals["SIG" + status.removeprefix("SIG")].value
        except KeyError:
            return None
    return None
