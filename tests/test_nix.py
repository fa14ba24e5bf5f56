"""Every .nix file under nix/, and a generated per-agent flake, parse with the
real `nix-instantiate --parse` (Debian's nix-bin; .ci/run installs it)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hyperhive.backends.nix_flake import AgentFlake, agent_flake
from hyperhive.names import AgentName

NIX_DIR = Path(__file__).resolve().parents[1] / "nix"
NIX_FILES = sorted(NIX_DIR.glob("**/*.nix"))

pytestmark = [
    pytest.mark.e2e,  # the real nix-instantiate
    pytest.mark.skipif(
        shutil.which("nix-instantiate") is None,
        reason="nix-instantiate is absent: apt-get install nix-bin (.ci/run does)",
    ),
]


def parse(path: Path) -> subprocess.CompletedProcess[str]:
    cmd = ["nix-instantiate"]
    if not Path("/nix/var/nix/daemon-socket/socket").exists():
        cmd += ["--store", "dummy://"]  # parsing needs no store; as root, avoid needing a daemon
    return subprocess.run([*cmd, "--parse", str(path)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "NIX_REMOTE": ""})


def test_the_nix_dir_holds_the_module_the_base_and_the_template() -> None:
    assert {p.name for p in NIX_FILES} >= {"flake.nix", "module.nix", "harness-base.nix", "agent.nix"}


@pytest.mark.parametrize("path", NIX_FILES, ids=lambda p: p.name)
def test_nix_file_parses(path: Path) -> None:
    r = parse(path)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("name", ["alice", "m1nd", "coder-frontend-2"])
def test_generated_agent_flake_parses(tmp_path: Path, name: str) -> None:
    f = tmp_path / "flake.nix"
    f.write_text(agent_flake(AgentFlake(AgentName(name), "builtin", 'path:/nix/store/a"b${c}?dir=nix')))
    r = parse(f)
    assert r.returncode == 0, r.stderr


def test_a_broken_file_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "bad.nix"
    f.write_text("{ a = ; }\n")
    r = parse(f)
    assert r.returncode != 0 and "syntax error" in r.stderr
