"""A real daemon with `--backend nixos`, driven through the real `hive` CLI, on
fake `nixos-container`/`machinectl` executables that record their argv.

Restart, rebuild and destroy are not daemon verbs yet: the test drives them
through a NixosBackend on the same state dir, continuing the same record.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from nixos_fakes import Fakes, install
from support import Hive, wait_for

from hyperhive.backends.nixos import NixosBackend
from hyperhive.names import AgentName


@pytest.fixture
def fakes(tmp_path: Path) -> Fakes:
    return install(tmp_path / "fake")


@pytest.fixture
def hive(tmp_path: Path, fakes: Fakes) -> Iterator[Hive]:
    h = Hive(tmp_path / "state", ["--backend", "nixos", "--restart-backoff-seconds", "0.05"], env=fakes.env)
    h.start()
    try:
        yield h
    finally:
        h.stop()


def cli(h: Hive, fakes: Fakes, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hyperhive", "--state-dir", str(h.state_dir), *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, **fakes.env},
    )


def test_lifecycle_through_the_daemon_runs_the_documented_command_lines(
    hive: Hive, fakes: Fakes, monkeypatch: pytest.MonkeyPatch,
) -> None:
    applied = hive.paths.applied_root
    wait_for(lambda: hive.ls()["m1nd"]["state"] == "running", what="m1nd's container")

    for args, out in ((("spawn", "alice"), "alice: running"), (("stop", "alice"), "alice: stopped"),
                      (("start", "alice"), "alice: running")):
        r = cli(hive, fakes, *args)
        assert (r.returncode, r.stdout.strip()) == (0, out), r.stderr

    # A harness that ends unasked: the container powers off, the daemon sees the
    # machine gone, reports the harness's status and starts the container again.
    (hive.paths.state(AgentName("alice")) / "harness.exit").write_text("exit-code exited 3\n")
    fakes.vanish("hh-alice")
    wait_for(lambda: hive.ls()["alice"]["restarts"] == 1 and hive.ls()["alice"]["state"] == "running",
             what="alice restarted after the crash")
    assert hive.ls()["alice"]["last_exit"] == "exited with status 3"
    assert fakes.machine_running("hh-alice")

    hive.stop()
    assert hive.proc is not None and hive.proc.returncode == 0

    # The verbs the daemon does not route yet, on the same containers.
    for key, value in fakes.env.items():
        monkeypatch.setenv(key, value)
    backend = NixosBackend.from_env(hive.paths)
    alice = AgentName("alice")
    handle = backend.start(alice, "builtin", lambda rc: None)
    handle = backend.restart(handle)
    handle = backend.rebuild(alice, "builtin", handle)
    assert handle is not None
    backend.destroy(alice, handle=handle)

    nc = "nixos-container"
    assert fakes.calls() == [
        [nc, "create", "hh-m1nd", "--flake", f"path:{applied}/m1nd#container"],   # boot: the manager
        [nc, "start", "hh-m1nd"],
        [nc, "create", "hh-alice", "--flake", f"path:{applied}/alice#container"],  # hive spawn alice
        [nc, "start", "hh-alice"],
        [nc, "stop", "hh-alice"],                                                  # hive stop alice
        [nc, "start", "hh-alice"],                                                 # hive start alice
        [nc, "start", "hh-alice"],                                                 # restart after the crash
        [nc, "stop", "hh-alice"],                                                  # daemon shutdown, in
        [nc, "stop", "hh-m1nd"],                                                   # reverse order
        [nc, "start", "hh-alice"],
        [nc, "restart", "hh-alice"],
        [nc, "update", "hh-alice", "--flake", f"path:{applied}/alice#container"],
        [nc, "restart", "hh-alice"],
        [nc, "destroy", "hh-alice"],
    ]
    assert (applied / "alice" / "flake.nix").exists() and (applied / "alice" / "agent.nix").exists()
    assert not (fakes.conf_dir / "hh-alice.conf").exists()


def test_a_failing_command_shows_its_stderr_to_the_operator(hive: Hive, fakes: Fakes) -> None:
    wait_for(lambda: hive.ls()["m1nd"]["state"] == "running", what="m1nd's container")
    fakes.fail("nixos-container", "create",
               "error: builder for '/nix/store/x-nixos-system-hh-bob.drv' failed with exit code 1\n")
    r = cli(hive, fakes, "spawn", "bob")
    assert r.returncode == 2
    assert r.stderr.startswith("hive: backend_failed: nixos-container create hh-bob")
    assert "builder for '/nix/store/x-nixos-system-hh-bob.drv' failed with exit code 1" in r.stderr

    fakes.heal("nixos-container", "create")
    fakes.fail("nixos-container", "start", "Job for container@hh-bob.service failed.\n")
    r = cli(hive, fakes, "start", "bob")
    assert r.returncode == 2 and "Job for container@hh-bob.service failed." in r.stderr
    assert hive.ls()["bob"]["state"] != "running"
    events = [e for e in hive.log_events() if e.get("event") == "container.command_failed"]
    assert [e["stderr"] for e in events][-1] == "Job for container@hh-bob.service failed."


def test_an_incomplete_nixos_environment_stops_the_daemon_with_a_logged_reason(tmp_path: Path, fakes: Fakes) -> None:
    env = {**os.environ, **fakes.env, "HYPERHIVE_NIXOS_POLL_SECONDS": "0"}
    r = subprocess.run(
        [sys.executable, "-m", "hyperhive", "--state-dir", str(tmp_path / "state"), "serve",
         "--listen", "127.0.0.1:0", "--backend", "nixos"],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert r.returncode == 1 and r.stderr == ""
    failed = [json.loads(line) for line in r.stdout.splitlines() if '"daemon.start_failed"' in line]
    assert [(e["code"], e["error"]) for e in failed] == [
        ("backend_failed", "HYPERHIVE_NIXOS_POLL_SECONDS must be > 0, got 0.0")]
