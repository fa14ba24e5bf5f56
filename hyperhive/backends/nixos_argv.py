"""Every command line the nixos backend runs, each built by a pure function.

    create   nixos-container create <c> --flake path:<applied>#container
    start    [nixos-container update <c> --flake path:<applied>#container]
                 (only when the applied config changed since the last build)
             nixos-container start <c>
    stop     nixos-container stop <c>
    kill     nixos-container terminate <c>       (a stop with no grace)
    restart  nixos-container restart <c>
    rebuild  nixos-container update <c> --flake path:<applied>#container
             (then ``restart`` when the container was running)
    destroy  nixos-container destroy <c>
    watch    machinectl show <c> --property=State --property=Leader   (polled)
    journal  journalctl -M <c> -b --no-pager --output=short-iso --lines=N
             [-u hive-ag3nt.service | -u hive-m1nd.service]

``<c>`` is ``container_name(agent)``. ``path:`` makes nix read the applied dir
as plain files (no git-tracked-files rule).
"""

from __future__ import annotations

from pathlib import Path

from hyperhive.backends.nix_flake import container_name, harness_unit
from hyperhive.journal import check_unit_and_lines
from hyperhive.names import AgentName

__all__ = [
    "create_argv",
    "destroy_argv",
    "flake_ref",
    "journal_argv",
    "parse_show",
    "restart_argv",
    "show_argv",
    "start_argv",
    "stop_argv",
    "terminate_argv",
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
