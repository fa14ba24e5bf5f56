"""A real daemon with `--backend nixos`, driven through the real `hive` CLI, on
fake `nixos-container`/`machinectl`/`systemctl` executables that record their
argv (and their environment).

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

from hyperhive.backends import nixos_argv
from hyperhive.backends.nixos import NixosBackend
from hyperhive.names import AgentName

pytestmark = pytest.mark.e2e  # every test here starts a daemon

# Credentials in the daemon's environment: none may reach a container.
SECRETS = {
    "ANTHROPIC_API_KEY": "sk-ant-api03-FAKE-hyperhive-test-0001",
    "ANTHROPIC_AUTH_TOKEN": "FAKE-auth-token-0002",
    "CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat01-FAKE-0003",
    "GITHUB_TOKEN": "ghp_FAKEhyperhive0004",
    "AWS_ACCESS_KEY_ID": "AKIAFAKEHYPERHIVE005",
    "AWS_SECRET_ACCESS_KEY": "FAKE/aws/secret/0006",
}


@pytest.fixture
def fakes(tmp_path: Path) -> Fakes:
    return install(tmp_path / "fake")


@pytest.fixture
def hive(tmp_path: Path, fakes: Fakes) -> Iterator[Hive]:
    h = Hive(tmp_path / "state", ["--backend", "nixos", "--restart-backoff-seconds", "0.05"],
             env={**fakes.env, **SECRETS})
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
    handle = backend.start(alice, "builtin", lambda rc, reason: None)
    handle = backend.restart(handle)
    rebuilt = backend.rebuild(alice, "builtin", handle)
    assert rebuilt is not None
    backend.destroy(alice, handle=rebuilt)

    nc = "nixos-container"
    limits = ["systemctl", "set-property", "--runtime", "container@hh-alice.service",
              "MemoryMax=4096M", "MemorySwapMax=0", "TasksMax=512"]
    assert fakes.calls() == [
        [nc, "create", "hh-m1nd", "--flake", f"path:{applied}/m1nd#container"],   # boot: the manager
        ["systemctl", "set-property", "--runtime", "container@hh-m1nd.service",
         "MemoryMax=4096M", "MemorySwapMax=0", "TasksMax=512"],
        [nc, "start", "hh-m1nd"],
        [nc, "create", "hh-alice", "--flake", f"path:{applied}/alice#container"],  # hive spawn alice
        limits,
        [nc, "start", "hh-alice"],
        [nc, "stop", "hh-alice"],                                                  # hive stop alice
        limits,                                                                    # hive start alice
        [nc, "start", "hh-alice"],
        ["systemctl", "show", "container@hh-alice.service", "--property=Result"],  # the crash: an OOM?
        limits,                                                                    # restart after the crash
        [nc, "start", "hh-alice"],
        [nc, "stop", "hh-alice"],                                                  # daemon shutdown, in
        [nc, "stop", "hh-m1nd"],                                                   # reverse order
        limits,
        [nc, "start", "hh-alice"],
        [nc, "restart", "hh-alice"],
        [nc, "update", "hh-alice", "--flake", f"path:{applied}/alice#container"],
        limits,
        [nc, "restart", "hh-alice"],
        [nc, "destroy", "hh-alice"],
    ]
    assert (applied / "alice" / "flake.nix").exists() and (applied / "alice" / "agent.nix").exists()
    assert not (fakes.conf_dir / "hh-alice.conf").exists()


def test_an_oom_kill_reaches_the_manager_as_out_of_memory(hive: Hive, fakes: Fakes) -> None:
    wait_for(lambda: hive.ls()["m1nd"]["state"] == "running", what="m1nd's container")
    r = cli(hive, fakes, "spawn", "alice")
    assert r.returncode == 0, r.stderr
    fakes.oom("hh-alice")
    wait_for(lambda: hive.ls()["alice"]["restarts"] == 1 and hive.ls()["alice"]["state"] == "running",
             what="alice restarted after the OOM kill")
    crashes = [e for e in hive.log_events() if e.get("event") == "container.crash"]
    assert crashes and crashes[-1].get("reason") == "out of memory", crashes
    exited = [e for e in hive.log_events() if e.get("event") == "container.exited"]
    assert (exited[-1]["returncode"], exited[-1]["reason"]) == (-9, "out of memory")


def test_no_credential_of_the_daemon_reaches_a_container(hive: Hive, fakes: Fakes) -> None:
    """The daemon holds fake credentials; a container's whole life (create,
    start, crash, restart, stop) leaves none in any command line, any command's
    environment, or anything under the state dir (the generated flake, the
    conf's binds, the records)."""
    wait_for(lambda: hive.ls()["m1nd"]["state"] == "running", what="m1nd's container")
    for args in (("spawn", "alice"), ("stop", "alice"), ("start", "alice")):
        r = cli(hive, fakes, *args)
        assert r.returncode == 0, r.stderr
    fakes.vanish("hh-alice")
    wait_for(lambda: hive.ls()["alice"]["restarts"] == 1 and hive.ls()["alice"]["state"] == "running",
             what="alice restarted after the crash")
    hive.stop()

    calls = fakes.calls(polls=True)
    assert {c[0] for c in calls} >= {"nixos-container", "machinectl", "systemctl"}
    envs = fakes.environments()
    assert len(envs) > 10 and all("HIVE_FAKE_DIR" in e for e in envs)  # each call's environment
    for key, secret in SECRETS.items():
        assert not any(secret in arg for c in calls for arg in c), key
        assert not any(key in e or secret in e.values() for e in envs), key
    texts = {f: f.read_bytes() for root in (hive.state_dir, fakes.conf_dir) for f in root.rglob("*") if f.is_file()}
    assert any(f.name == "flake.nix" for f in texts) and any(f.suffix == ".conf" for f in texts)
    for f, data in texts.items():
        for key, secret in SECRETS.items():
            assert secret.encode() not in data, (key, f)
    # The command environment is the daemon's with its credentials taken out, nothing more.
    assert nixos_argv.command_env({**fakes.env, **SECRETS}) == fakes.env


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
