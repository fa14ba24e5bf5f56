"""The nixos backend: its pure command lines and files, then the backend itself
against fake `nixos-container`/`machinectl`/`journalctl` executables."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest
from nixos_fakes import Fakes, install
from support import wait_for

from hyperhive.backends import nixos_argv as argv
from hyperhive.backends.nix_flake import (
    AgentFlake,
    agent_flake,
    bind_flags,
    conf_with,
    container_name,
    nix_string,
    parse_exit_record,
)
from hyperhive.backends.nixos import NixosBackend, NixosOptions
from hyperhive.errors import BackendFailed, BadRequest, Conflict
from hyperhive.names import AgentName
from hyperhive.paths import AgentConfig, StatePaths

A = AgentName("alice")
M = AgentName("m1nd")
REPO_NIX = Path(__file__).resolve().parents[2] / "nix"


# --- container names ------------------------------------------------------------
@pytest.mark.parametrize(("name", "expected"), [
    ("a", "hh-a"),
    ("m1nd", "hh-m1nd"),
    ("abcdefgh", "hh-abcdefgh"),
])
def test_short_names_keep_their_name(name: str, expected: str) -> None:
    assert container_name(AgentName(name)) == expected


@pytest.mark.parametrize("name", ["abcdefghi", "a-", "x" * 31, "coder-frontend-2", "abcd-" * 6 + "z"])
def test_long_names_fit_nixos_container_and_are_stable(name: str) -> None:
    c = container_name(AgentName(name))
    assert len(c) <= 11 and re.fullmatch(r"[a-zA-Z0-9_-]+", c)
    assert c.startswith("hh" + name[:4]) and c[2] != "-" and not c.endswith("-")
    assert container_name(AgentName(name)) == c


def test_names_that_share_a_prefix_get_different_containers() -> None:
    names = [f"worker-{i}" for i in range(200)] + [f"w{i}" for i in range(200)]
    assert len({container_name(AgentName(n)) for n in names}) == len(names)


# --- command lines ----------------------------------------------------------------
def test_every_lifecycle_command_line() -> None:
    applied = Path("/var/lib/hyperhive/applied/alice")
    flake = "path:/var/lib/hyperhive/applied/alice#container"
    assert argv.create_argv(A, applied) == ["nixos-container", "create", "hh-alice", "--flake", flake]
    assert argv.start_argv(A) == ["nixos-container", "start", "hh-alice"]
    assert argv.stop_argv(A) == ["nixos-container", "stop", "hh-alice"]
    assert argv.restart_argv(A) == ["nixos-container", "restart", "hh-alice"]
    assert argv.terminate_argv(A) == ["nixos-container", "terminate", "hh-alice"]
    assert argv.update_argv(A, applied) == ["nixos-container", "update", "hh-alice", "--flake", flake]
    assert argv.destroy_argv(A) == ["nixos-container", "destroy", "hh-alice"]
    assert argv.show_argv(A) == ["machinectl", "show", "hh-alice", "--property=State", "--property=Leader"]


@pytest.mark.parametrize(("name", "unit", "lines", "expected"), [
    ("alice", "harness", 200, ["journalctl", "-M", "hh-alice", "-b", "--no-pager", "--output=short-iso",
                               "--lines=200", "-u", "hive-ag3nt.service"]),
    ("m1nd", "harness", 50, ["journalctl", "-M", "hh-m1nd", "-b", "--no-pager", "--output=short-iso",
                             "--lines=50", "-u", "hive-m1nd.service"]),
    ("alice", "", 9999, ["journalctl", "-M", "hh-alice", "-b", "--no-pager", "--output=short-iso",
                         "--lines=5000"]),
])
def test_journal_command_line(name: str, unit: str, lines: int, expected: list[str]) -> None:
    assert argv.journal_argv(AgentName(name), unit, lines) == expected


@pytest.mark.parametrize(("unit", "lines"), [
    ("sshd.service", 10), ("hive-ag3nt.service", 10), ("harness; rm -rf /", 10), ("harness", 0),
    ("harness", -5), ("harness", True),
])
def test_journal_refuses_other_units_and_bad_line_counts(unit: str, lines: int) -> None:
    with pytest.raises(BadRequest):
        argv.journal_argv(A, unit, lines)


def test_parse_show() -> None:
    assert argv.parse_show("State=running\nLeader=4242\n") == {"State": "running", "Leader": "4242"}


# --- files ------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "rc"), [
    ("exit-code exited 3\n", 3), ("success exited 0", 0), ("signal killed TERM", -15),
    ("core-dump dumped SEGV", -11), ("", None), ("garbage", None), ("signal killed NOPE", None),
])
def test_parse_exit_record(text: str, rc: int | None) -> None:
    assert parse_exit_record(text) == rc


def test_conf_gets_host_network_and_binds_and_keeps_the_rest() -> None:
    flags = bind_flags("/s/agents/a/run", "/s/agents/a/state", "/s/applied/a")
    assert flags == ("--bind=/s/agents/a/run:/hive/run --bind=/s/agents/a/state:/hive/state "
                     "--bind-ro=/s/applied/a:/hive/applied")
    text = "PRIVATE_NETWORK=1\nHOST_ADDRESS=10.233.1.1\nFLAKE=path:/x\n"
    out = conf_with(text, {"PRIVATE_NETWORK": "0", "EXTRA_NSPAWN_FLAGS": flags})
    assert out == f'HOST_ADDRESS=10.233.1.1\nFLAKE=path:/x\nPRIVATE_NETWORK=0\nEXTRA_NSPAWN_FLAGS="{flags}"\n'
    assert conf_with(out, {"PRIVATE_NETWORK": "0", "EXTRA_NSPAWN_FLAGS": flags}) == out  # idempotent


@pytest.mark.parametrize("bad", ["relative/run", "/with space", "/with:colon", '/q"uote', "/d$ollar"])
def test_bind_flags_refuse_paths_nspawn_or_the_conf_would_split(bad: str) -> None:
    with pytest.raises(BadRequest):
        bind_flags(bad, "/ok", "/ok")


def test_nix_string_escapes() -> None:
    assert nix_string('a"b\\c${d}\n') == '"a\\"b\\\\c\\${d}\\n"'


def test_agent_flake_names_the_agent_its_git_user_and_its_unit_role() -> None:
    text = agent_flake(AgentFlake(A, "builtin", "path:/nix/store/x-src?dir=nix"))
    assert 'inputs.hyperhive.url = "path:/nix/store/x-src?dir=nix";' in text
    assert 'name = lib.mkForce "alice";' in text and 'email = lib.mkForce "alice@hyperhive.local";' in text
    assert 'role = "agent";' in text and 'socketDir = "/hive/run";' in text
    assert 'role = "manager";' in agent_flake(AgentFlake(M, "builtin", "path:/x"))


# --- the backend against the fakes ------------------------------------------------------
@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fakes:
    f = install(tmp_path / "fake")
    for key, value in f.env.items():
        monkeypatch.setenv(key, value)
    return f


@pytest.fixture
def backend(tmp_path: Path, fakes: Fakes) -> NixosBackend:
    paths = StatePaths(tmp_path / "state")
    paths.create_agent(A, AgentConfig())
    b = NixosBackend.from_env(paths)
    assert b.options.conf_dir == fakes.conf_dir and b.options.poll_seconds == 0.1
    return b


def test_options_come_from_the_environment() -> None:
    opts = NixosOptions.from_env({"HYPERHIVE_FLAKE": "github:o/r?dir=nix", "HYPERHIVE_AGENT_TEMPLATE": "/t.nix"})
    assert (opts.hyperhive_flake, opts.agent_template) == ("github:o/r?dir=nix", Path("/t.nix"))
    assert opts.conf_dir == Path("/etc/nixos-containers") and opts.poll_seconds == 2.0
    # From a source checkout, the repo's own flake and template are the defaults.
    assert NixosOptions.from_env({}).agent_template == REPO_NIX / "agent.nix"
    with pytest.raises(BackendFailed):
        NixosOptions.from_env({"HYPERHIVE_FLAKE": "x", "HYPERHIVE_NIXOS_POLL_SECONDS": "0"})


def test_lifecycle_runs_exactly_the_documented_command_lines(backend: NixosBackend, fakes: Fakes) -> None:
    applied = backend.paths.applied(A)
    flake = f"path:{applied}#container"
    exits: list[int] = []
    h = backend.start(A, "builtin", exits.append)  # creates on first start
    wait_for(lambda: h.pid == 4242, timeout=5, what="the watcher's first poll")
    h = backend.restart(h)
    h2 = backend.rebuild(A, "builtin", h)
    assert h2 is not None
    assert backend.stop(h2) == 0
    assert backend.rebuild(A, "builtin") is None  # stopped: no restart
    backend.destroy(A)
    assert fakes.calls() == [
        ["nixos-container", "create", "hh-alice", "--flake", flake],
        ["nixos-container", "start", "hh-alice"],
        ["nixos-container", "restart", "hh-alice"],
        ["nixos-container", "update", "hh-alice", "--flake", flake],
        ["nixos-container", "restart", "hh-alice"],
        ["nixos-container", "stop", "hh-alice"],
        ["nixos-container", "update", "hh-alice", "--flake", flake],
        ["nixos-container", "destroy", "hh-alice"],
    ]
    polls = [c for c in fakes.calls(polls=True) if c[0] == "machinectl"]
    assert polls and all(c == argv.show_argv(A) for c in polls)
    assert exits == []  # nothing we asked for is reported as an exit
    # A plain destroy keeps the agent's dirs.
    assert backend.paths.agent(A).exists() and (applied / "flake.nix").exists()


def test_a_start_after_the_applied_config_changed_rebuilds_first(backend: NixosBackend, fakes: Fakes) -> None:
    applied = backend.paths.applied(A)
    update = ["nixos-container", "update", "hh-alice", "--flake", f"path:{applied}#container"]
    start, stop = argv.start_argv(A), argv.stop_argv(A)

    def cycle(driver: str = "builtin") -> list[list[str]]:
        before = len(fakes.calls())
        backend.stop(backend.start(A, driver, lambda rc: None))
        return fakes.calls()[before:]

    assert [c[1] for c in cycle()] == ["create", "start", "stop"]
    assert cycle() == [start, stop]  # nothing changed: no build
    (applied / "agent.nix").write_text("{ pkgs, ... }: { environment.systemPackages = [ pkgs.jq ]; }\n")
    assert cycle() == [update, start, stop]
    (applied / "agent.json").write_text('{"allowed_recipients": ["m1nd"]}\n')  # the daemon's, not nix's
    (applied / "flake.lock").write_text("{}\n")
    assert cycle() == [start, stop]
    assert cycle(driver="claude") == [update, start, stop]  # the generated flake changed
    assert 'driver = "claude";' in (applied / "flake.nix").read_text()
    # A config swapped in whole (as an approved commit is): agent.nix is kept if
    # the tree has one, the flake regenerated, and the container rebuilt.
    for f in applied.iterdir():
        f.unlink()
    assert cycle(driver="claude") == [update, start, stop]
    assert (applied / "flake.nix").exists() and (applied / "agent.nix").exists()


def test_a_stop_without_grace_terminates_the_machine(backend: NixosBackend, fakes: Fakes) -> None:
    exits: list[int] = []
    h = backend.start(A, "builtin", exits.append)
    assert backend.stop(h, timeout=0.0) == -9
    assert fakes.calls()[-1] == argv.terminate_argv(A)
    assert not fakes.machine_running("hh-alice") and exits == []


def test_create_writes_the_flake_the_template_and_the_binds(backend: NixosBackend, fakes: Fakes) -> None:
    backend.create(A, "builtin")
    applied = backend.paths.applied(A)
    assert (applied / "agent.nix").read_text() == (REPO_NIX / "agent.nix").read_text()
    assert 'name = lib.mkForce "alice";' in (applied / "flake.nix").read_text()
    conf = (fakes.conf_dir / "hh-alice.conf").read_text()
    assert "PRIVATE_NETWORK=0\n" in conf and "PRIVATE_NETWORK=1" not in conf
    assert f'--bind={backend.paths.run(A)}:/hive/run ' in conf
    assert f"FLAKE=path:{applied}\n" in conf  # what nixos-container wrote is kept
    with pytest.raises(Conflict):
        backend.create(A, "builtin")


def test_destroy_purge_removes_the_agents_dirs(backend: NixosBackend, fakes: Fakes) -> None:
    backend.create(A, "builtin")
    backend.destroy(A, purge=True)
    assert not backend.paths.agent(A).exists() and not backend.paths.applied(A).exists()
    assert backend.paths.root.exists() and not (fakes.conf_dir / "hh-alice.conf").exists()


def test_a_failing_command_raises_with_its_stderr_and_changes_nothing(backend: NixosBackend, fakes: Fakes) -> None:
    fakes.fail("nixos-container", "create", "error: flake 'path:/x' does not provide attribute 'container'\n")
    with pytest.raises(BackendFailed) as err:
        backend.start(A, "builtin", lambda rc: None)
    assert "does not provide attribute 'container'" in err.value.message
    assert err.value.code == "backend_failed" and "nixos-container create hh-alice" in err.value.message
    assert not fakes.machine_running("hh-alice")
    assert [c[1] for c in fakes.calls()] == ["create"]  # no start after a failed create


def test_journal_returns_the_output_of_the_documented_command(backend: NixosBackend, fakes: Fakes) -> None:
    out = backend.journal(A, "harness", 100)
    assert out.splitlines()[0].endswith("harness up")
    assert fakes.calls() == [argv.journal_argv(A, "harness", 100)]


def test_a_vanished_machine_is_reported_with_the_harness_exit_status(backend: NixosBackend, fakes: Fakes) -> None:
    exits: list[int] = []
    reported = threading.Event()
    backend.start(A, "builtin", lambda rc: (exits.append(rc), reported.set()))
    (backend.paths.state(A) / "harness.exit").write_text("exit-code exited 3\n")
    fakes.vanish("hh-alice")
    assert reported.wait(5)
    assert exits == [3]
    # Stopped from outside (no record): reported as killed by SIGTERM.
    reported.clear()
    backend.start(A, "builtin", lambda rc: (exits.append(rc), reported.set()))
    assert not (backend.paths.state(A) / "harness.exit").exists()  # a start clears the old record
    fakes.vanish("hh-alice")
    assert reported.wait(5)
    assert exits == [3, -15]


def test_machined_failing_is_not_a_crash(backend: NixosBackend, fakes: Fakes) -> None:
    exits: list[int] = []
    fakes.fail("machinectl", "show", "Failed to connect to bus: Connection refused\n")
    h = backend.start(A, "builtin", exits.append)
    wait_for(lambda: len(fakes.calls(polls=True)) >= 6, timeout=5, what="several failed polls")
    assert exits == [] and h.pid is None
    fakes.heal("machinectl", "show")
    wait_for(lambda: h.pid == 4242, timeout=5, what="polling to recover")
    backend.stop(h)
    assert exits == []
