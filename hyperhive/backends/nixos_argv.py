"""Every command line the nixos backend runs, each built by a pure function.

    create   nixos-container create <c> --flake path:<applied>#container
    start    [nixos-container update <c> --flake path:<applied>#container]
                 (only when the applied config changed since the last build)
             systemctl set-property --runtime container@<c>.service
                 MemoryMax=<N>M MemorySwapMax=0 TasksMax=<N>
             nixos-container start <c>
    stop     nixos-container stop <c>
    kill     nixos-container terminate <c>       (a stop with no grace)
    restart  nixos-container restart <c>
    rebuild  nixos-container update <c> --flake path:<applied>#container
             (then ``set-property`` and ``restart`` when the container was running)
    destroy  nixos-container destroy <c>
    watch    machinectl show <c> --property=State --property=Leader   (polled)
             systemctl show container@<c>.service --property=Result
                 (once, when the machine is gone unasked: was it an OOM kill?)
    journal  journalctl -M <c> -b --no-pager --output=short-iso --lines=N
             [-u hive-ag3nt.service | -u hive-m1nd.service]

``<c>`` is ``container_name(agent)``. ``path:`` makes nix read the applied dir
as plain files (no git-tracked-files rule).

Limits are runtime unit properties, not a generated drop-in: ``set-property
--runtime`` applies at once (to a running container too) and needs no
``daemon-reload`` (one per agent start would stall a host of many agents),
and --runtime keeps them out of /etc (read-only on NixOS): the daemon sets
them again before every start, so nothing stale outlives a reboot.
``MemorySwapMax=0`` as on the local backend: swap must not hide the limit.

Every command runs with ``command_env``: the daemon's environment without its
credentials. None of these tools needs one, and none of them could hand the
environment on to a container (systemd starts container@.service with its own
environment; nix evaluates the flakes purely), but the daemon's keys are
kept from them all the same.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from hyperhive.backends.nix_flake import container_name, container_unit, harness_unit
from hyperhive.errors import BadRequest
from hyperhive.journal import check_unit_and_lines
from hyperhive.names import AgentName

__all__ = [
    "command_env",
    "create_argv",
    "destroy_argv",
    "flake_ref",
    "journal_argv",
    "parse_show",
    "restart_argv",
    "set_limits_argv",
    "show_argv",
    "start_argv",
    "stop_argv",
    "terminate_argv",
    "unit_result_argv",
    "update_argv",
]


def flake_ref(applied_dir: Path) -> str:
    return f"path:{applied_dir}#container"


def create_argv(name: AgentName, applied_dir: Path) -> list[str]:
    return ["nixos-container", "create", container_name(name), "--flake", flake_ref(applied_dir)]


def start_argv(name: AgentName) -> list[str]:
    return ["nixos-container", "start", container_name(name)]


def stop_argv(name: AgentName) -> list[str]:
    return ["nixos-container", "stop", container_name(name)]


def terminate_argv(name: AgentName) -> list[str]:
    return ["nixos-container", "terminate", container_name(name)]


def restart_argv(name: AgentName) -> list[str]:
    return ["nixos-container", "restart", container_name(name)]


def update_argv(name: AgentName, applied_dir: Path) -> list[str]:
    return ["nixos-container", "update", container_name(name), "--flake", flake_ref(applied_dir)]


def destroy_argv(name: AgentName) -> list[str]:
    return ["nixos-container", "destroy", container_name(name)]


def show_argv(name: AgentName) -> list[str]:
    return ["machinectl", "show", container_name(name), "--property=State", "--property=Leader"]


def set_limits_argv(name: AgentName, memory_mb: int, pids: int) -> list[str]:
    """The container unit's memory and task limits, for this boot (see the module docstring)."""
    for what, value in (("memory_mb", memory_mb), ("pids", pids)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise BadRequest(f"limits.{what} must be a positive whole number, got {value!r}")
    return ["systemctl", "set-property", "--runtime", container_unit(name),
            f"MemoryMax={memory_mb}M", "MemorySwapMax=0", f"TasksMax={pids}"]


def unit_result_argv(name: AgentName) -> list[str]:
    """How the container unit last ended (``Result=oom-kill`` after an OOM kill)."""
    return ["systemctl", "show", container_unit(name), "--property=Result"]


def journal_argv(name: AgentName, unit: str, lines: int) -> list[str]:
    """``journalctl`` for a container; ``unit`` is "harness" or "" (whole machine).

    Any other unit is refused, so the call cannot be turned to other units;
    ``lines`` is capped at 5000 (hyperhive.journal's checks).
    """
    unit, lines = check_unit_and_lines(unit, lines)
    argv = [
        "journalctl", "-M", container_name(name), "-b", "--no-pager", "--output=short-iso",
        f"--lines={lines}",
    ]
    if unit == "harness":
        argv += ["-u", harness_unit(name)]
    return argv


def parse_show(stdout: str) -> dict[str, str]:
    """``machinectl show`` output (KEY=value lines) as a dict."""
    out: dict[str, str] = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


# The daemon's own credentials (the model API's, a forge's, a cloud's): by the
# vendor prefix, or by a word of the name. nix's own settings (NIX_CONFIG, with
# any access-tokens of its fetchers) and SSH_AUTH_SOCK stay: they serve nix's
# fetches on the host and never reach a build or a container.
_CREDENTIAL_PREFIXES = ("ANTHROPIC", "CLAUDE", "AWS", "GITHUB", "GH", "GITLAB", "OPENAI", "GOOGLE", "AZURE", "HF")
_CREDENTIAL_WORDS = frozenset({"TOKEN", "TOKENS", "SECRET", "SECRETS", "PASSWORD", "PASSWD", "PASSPHRASE",
                               "CREDENTIAL", "CREDENTIALS", "APIKEY"})
_API_KEY = re.compile(r"(^|_)API_?KEY(_|$)")


def command_env(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without anything that looks like a credential."""
    def secret(key: str) -> bool:
        upper = key.upper()
        words = upper.split("_")
        return (words[0] in _CREDENTIAL_PREFIXES or not _CREDENTIAL_WORDS.isdisjoint(words)
                or _API_KEY.search(upper) is not None)
    return {k: v for k, v in environ.items() if not secret(k)}
