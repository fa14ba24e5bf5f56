"""Both backends are a ``Backend`` (backends/base.py): statically (mypy checks
the two functions below) and in what a capability one of them lacks answers."""

from __future__ import annotations

from pathlib import Path

from hyperhive.backends.base import Backend
from hyperhive.backends.local import LocalBackend, LocalHandle
from hyperhive.backends.nixos import NixosBackend, NixosHandle, NixosOptions
from hyperhive.names import AgentName
from hyperhive.paths import AgentConfig, StatePaths

A = AgentName("alice")
DECLARED = ("kind", "sandboxed", "start", "adopt", "release", "stop", "destroy", "close", "usage", "account",
            "journal")


def local_is_a_backend(b: LocalBackend) -> Backend[LocalHandle]:
    return b


def nixos_is_a_backend(b: NixosBackend) -> Backend[NixosHandle]:
    return b


def paths_with_alice(tmp_path: Path) -> StatePaths:
    paths = StatePaths(tmp_path / "state")
    paths.create_agent(A, AgentConfig())
    return paths


def test_nixos_has_no_host_resources_per_agent(tmp_path: Path) -> None:
    ran: list[list[str]] = []

    def run(cmd: list[str], timeout: float) -> str:
        ran.append(cmd)
        return ""

    b = nixos_is_a_backend(NixosBackend(paths_with_alice(tmp_path), NixosOptions("path:/x", tmp_path / "t.nix"), run))
    assert all(hasattr(b, m) for m in DECLARED)
    assert (b.kind, b.sandboxed) == ("nixos", True)
    assert b.usage(A) is None and b.account(A) is None
    b.close()
    assert ran == []  # none of these runs a command


def test_local_without_cgroups(tmp_path: Path) -> None:
    b = local_is_a_backend(LocalBackend(paths_with_alice(tmp_path), "off", cgroups=False))
    assert all(hasattr(b, m) for m in DECLARED)
    assert (b.kind, b.sandboxed) == ("local", False)
    assert b.usage(A) is None  # no cgroup: no figures
    b.destroy(A)  # nothing beyond the process to remove
    account = b.account(A)
    assert account is not None and account.uid >= 0
    b.close()
