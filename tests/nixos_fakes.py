"""Fake `nixos-container`, `machinectl`, `systemctl` and `journalctl` for the
nixos backend's tests: NixOS cannot run here. Each is a small Python script
that appends its argv as one JSON line to a record file (and the environment
it was given to another), then acts like the real tool on a state dir:
`create` writes the container's conf as nixos-container does, `start`/`stop`
make the machine known/unknown to `machinectl show`, `systemctl show` says the
container unit's ``Result=`` (``success`` unless a test made it ``oom-kill``).

A file ``fail-<tool>-<action>`` in the fake dir makes that call exit 1 with
the file's text on stderr.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Fakes", "install"]

_COMMON = r'''
import json, os, sys
from pathlib import Path
FAKE = Path(os.environ["HIVE_FAKE_DIR"])
TOOL = os.path.basename(sys.argv[0])
ARGS = sys.argv[1:]
with open(FAKE / "record.jsonl", "a") as f:
    f.write(json.dumps([TOOL, *ARGS]) + "\n")
with open(FAKE / "env.jsonl", "a") as f:
    f.write(json.dumps([TOOL, dict(os.environ)]) + "\n")
ACTION = ARGS[0] if ARGS else ""
fail = FAKE / f"fail-{TOOL}-{ACTION}"
if fail.exists():
    sys.stderr.write(fail.read_text())
    sys.exit(1)
MACHINES = FAKE / "machines"
MACHINES.mkdir(exist_ok=True)
CONF = Path(os.environ["HYPERHIVE_NIXOS_CONF_DIR"])
def die(msg):
    sys.stderr.write(f"{TOOL}: {msg}\n")
    sys.exit(1)
'''

_NIXOS_CONTAINER = _COMMON + r'''
name = ARGS[1]
conf = CONF / f"{name}.conf"
if ACTION == "create":
    if conf.exists():
        die(f"container '{name}' already exists")
    if len(name) > 11:
        die(f"container name '{name}' is too long")
    flake = ARGS[ARGS.index("--flake") + 1]
    conf.write_text("PRIVATE_NETWORK=1\nHOST_ADDRESS=10.233.1.1\nLOCAL_ADDRESS=10.233.1.2\n"
                    f"HOST_BRIDGE=\nHOST_PORT=\nAUTO_START=0\nFLAKE={flake.split('#')[0]}\n")
    sys.exit(0)
if not conf.exists():
    if ACTION == "destroy":
        sys.exit(0)
    die(f"container '{name}' does not exist")
if ACTION in ("start", "restart"):
    (MACHINES / name).touch()
elif ACTION in ("stop", "terminate"):
    (MACHINES / name).unlink(missing_ok=True)
elif ACTION == "destroy":
    (MACHINES / name).unlink(missing_ok=True)
    conf.unlink()
elif ACTION != "update":
    die(f"unknown action '{ACTION}'")
'''

_MACHINECTL = _COMMON + r'''
name = ARGS[1]
if not (MACHINES / name).exists():
    die(f"Could not get path to machine: No machine '{name}' known")
print("State=running")
print("Leader=4242")
'''

_SYSTEMCTL = _COMMON + r'''
if ACTION == "set-property":
    sys.exit(0)
if ACTION == "show":
    result = FAKE / f"result-{ARGS[1]}"
    print("Result=" + (result.read_text().strip() if result.exists() else "success"))
    sys.exit(0)
die(f"unknown action '{ACTION}'")
'''

_JOURNALCTL = _COMMON + r'''
print("2026-11-26T10:00:00+0000 host hive[42]: harness up")
print("2026-11-26T10:00:01+0000 host hive[42]: turn done")
'''


@dataclass
class Fakes:
    dir: Path
    bin: Path
    conf_dir: Path

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to use the fakes (merge into os.environ)."""
        return {
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "HIVE_FAKE_DIR": str(self.dir),
            "HYPERHIVE_NIXOS_CONF_DIR": str(self.conf_dir),
            "HYPERHIVE_FLAKE": "path:/nix/store/0000-hyperhive-source?dir=nix",
            "HYPERHIVE_NIXOS_POLL_SECONDS": "0.1",
        }

    def calls(self, *, polls: bool = False) -> list[list[str]]:
        """Every recorded command line, in order; the watcher's polls only if asked."""
        f = self.dir / "record.jsonl"
        rows = [json.loads(line) for line in f.read_text().splitlines()] if f.exists() else []
        return [r for r in rows if polls or r[:2] != ["machinectl", "show"]]

    def environments(self) -> list[dict[str, str]]:
        """The environment of every recorded call, in order."""
        f = self.dir / "env.jsonl"
        return [json.loads(line)[1] for line in f.read_text().splitlines()] if f.exists() else []

    def fail(self, tool: str, action: str, stderr: str) -> None:
        (self.dir / f"fail-{tool}-{action}").write_text(stderr)

    def heal(self, tool: str, action: str) -> None:
        (self.dir / f"fail-{tool}-{action}").unlink(missing_ok=True)

    def machine_running(self, container: str) -> bool:
        return (self.dir / "machines" / container).exists()

    def vanish(self, container: str) -> None:
        """The machine disappears as if its harness had powered it off."""
        (self.dir / "machines" / container).unlink()

    def oom(self, container: str) -> None:
        """The host's container unit ends by an OOM kill (``Result=oom-kill``), the machine with it."""
        (self.dir / f"result-container@{container}.service").write_text("oom-kill\n")
        self.vanish(container)


def install(root: Path) -> Fakes:
    """Write the fake tools under ``root``."""
    fakes = Fakes(root, root / "bin", root / "nixos-containers")
    fakes.bin.mkdir(parents=True)
    fakes.conf_dir.mkdir()
    for tool, body in (("nixos-container", _NIXOS_CONTAINER), ("machinectl", _MACHINECTL),
                       ("systemctl", _SYSTEMCTL), ("journalctl", _JOURNALCTL)):
        exe = fakes.bin / tool
        exe.write_text(f"#!{sys.executable}\n{body}")
        exe.chmod(0o755)
    return fakes
