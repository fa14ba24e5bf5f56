"""The nixos backend: its pure command lines and files, then the backend itself
against fake `nixos-container`/`machinectl`/`systemctl`/`journalctl` executables."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from nixos_fakes import Fakes, install
from support import wait_for

from hyperhive.backends import nixos_argv as argv
from hyperhive.backends.nix_flake import (
    LOOPBACK_ONLY,
    AgentFlake,
    agent_flake,
    bind_flags,
    conf_with,
    container_conf,
    container_name,
    container_unit,
    exit_reason,
    exit_service_result,
    nix_string,
    parse_exit_record,
)
from hyperhive.backends.nixos import DEFAULT_LIMITS, NixosBackend, NixosOptions
from hyperhive.errors import BackendFailed, BadRequest, Conflict
from hyperhive.names import AgentName
from hyperhive.paths import AgentConfig, Limits, StatePaths

A = AgentName("alice")
M = AgentName("m1nd")
REPO_NIX = Path(__file__).resolve().parents[2] / "nix"


# --- container names ------------------------------------------------------------
# e2e: through the fakes of NixOS's tools (real subprocesses), as setup.cfg's e2e marker says
pytestmark = pytest.mark.e2e


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
    assert argv.unit_result_argv(A) == ["systemctl", "show", "container@hh-alice.service", "--property=Result"]


def test_limits_are_runtime_properties_of_the_container_unit() -> None:
    assert container_unit(A) == "container@hh-alice.service"
    long = AgentName("coder-frontend-2")
    assert container_unit(long) == f"container@{container_name(long)}.service"
    assert argv.set_limits_argv(A, 4096, 512) == [
        "systemctl", "set-property", "--runtime", "container@hh-alice.service",
        "MemoryMax=4096M", "MemorySwapMax=0", "TasksMax=512"]
    assert argv.set_limits_argv(M, 1024, 64)[3:] == [
        "container@hh-m1nd.service", "MemoryMax=1024M", "MemorySwapMax=0", "TasksMax=64"]


@pytest.mark.parametrize(("memory_mb", "pids"), [(0, 512), (4096, -1), (True, 512), ("4096", 512), (4096, 1.5)])
def test_limits_refuse_what_is_not_a_positive_whole_number(memory_mb: object, pids: object) -> None:
    with pytest.raises(BadRequest):
        argv.set_limits_argv(A, memory_mb, pids)  # type: ignore[arg-type]


def test_command_env_keeps_no_credential_of_the_daemon() -> None:
    env = {
        "PATH": "/bin", "HOME": "/root", "LANG": "C.UTF-8", "NIX_CONFIG": "experimental-features = flakes",
        "SSH_AUTH_SOCK": "/run/ssh", "HYPERHIVE_NIXOS_CONF_DIR": "/etc/nixos-containers",
        "HYPERHIVE_FLAKE": "path:/x?dir=nix", "HIVE_FAKE_DIR": "/tmp/f",
        "ANTHROPIC_API_KEY": "k", "ANTHROPIC_AUTH_TOKEN": "t", "ANTHROPIC_BASE_URL": "http://x",
        "CLAUDE_CODE_OAUTH_TOKEN": "o", "GITHUB_TOKEN": "g", "GH_TOKEN": "g", "AWS_ACCESS_KEY_ID": "a",
        "AWS_SECRET_ACCESS_KEY": "s", "AWS_SESSION_TOKEN": "s", "OPENAI_API_KEY": "o", "HYPERHIVE_TOKEN_FILE": "/t",
        "MY_SERVICE_PASSWORD": "p", "DEPLOY_SECRET": "s", "SOME_API_KEY": "k", "FOO_APIKEY": "k",
    }
    assert argv.command_env(env) == {
        "PATH": "/bin", "HOME": "/root", "LANG": "C.UTF-8", "NIX_CONFIG": "experimental-features = flakes",
        "SSH_AUTH_SOCK": "/run/ssh", "HYPERHIVE_NIXOS_CONF_DIR": "/etc/nixos-containers",
        "HYPERHIVE_FLAKE": "path:/x?dir=nix", "HIVE_FAKE_DIR": "/tmp/f",
    }


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


@pytest.mark.parametrize(("record", "unit_result", "reason"), [
    ("oom-kill killed KILL\n", "success", "out of memory"),   # the harness unit saw it
    ("oom-kill exited 1", None, "out of memory"),            # systemctl show failed: the record decides
    (None, "oom-kill", "out of memory"),                     # the machine went down whole
    ("exit-code exited 3", "oom-kill", "out of memory"),
    ("exit-code exited 3", "success", None),
    ("signal killed TERM", "exit-code", None),
    (None, None, None), ("garbage", "success", None),
])
def test_exit_reason_says_out_of_memory_after_an_oom_kill(record: str | None, unit_result: str | None,
                                                          reason: str | None) -> None:
    assert exit_reason(record, unit_result) == reason


def test_exit_service_result() -> None:
    assert exit_service_result("oom-kill killed KILL\n") == "oom-kill"
    assert exit_service_result("success exited 0") == "success" and exit_service_result("x y") is None


def test_conf_gets_a_loopback_only_private_network_and_binds_and_keeps_the_rest() -> None:
    flags = bind_flags("/s/agents/a/run", "/s/agents/a/state", "/s/agents/a/work", "/s/applied/a")
    assert flags == ("--bind-ro=/s/agents/a/run:/hive/run --bind=/s/agents/a/state:/hive/state "
                     "--bind=/s/agents/a/work:/hive/work --bind-ro=/s/applied/a:/hive/applied")
    # What nixos-container create writes: a veth pair with an address each end.
    text = ("PRIVATE_NETWORK=1\nHOST_ADDRESS=10.233.1.1\nLOCAL_ADDRESS=10.233.1.2\nHOST_BRIDGE=\n"
            "HOST_PORT=\nAUTO_START=0\nFLAKE=path:/x\n")
    out = container_conf(text, flags)
    assert out == ("AUTO_START=0\nFLAKE=path:/x\nPRIVATE_NETWORK=1\nHOST_ADDRESS=\nLOCAL_ADDRESS=\n"
                   "HOST_ADDRESS6=\nLOCAL_ADDRESS6=\nLOCAL_MAC_ADDRESS=\nHOST_BRIDGE=\nHOST_PORT=\n"
                   f'NETWORK_NAMESPACE_PATH=\nINTERFACES=\nMACVLANS=\nEXTRA_NSPAWN_FLAGS="{flags}"\n')
    assert container_conf(out, flags) == out  # idempotent
    # A conf of an older hive (host network) gets the private one.
    old = "PRIVATE_NETWORK=0\nFLAKE=path:/x\nEXTRA_NSPAWN_FLAGS=\"--bind=/s:/hive/run\"\n"
    assert container_conf(old, flags) == "FLAKE=path:/x\n" + out.split("FLAKE=path:/x\n")[1]
    assert conf_with("A=1\n", {"B": "x y"}) == 'A=1\nB="x y"\n'
    # Every key container@.service reads to give a container a link outward is empty.
    assert {k for k, v in LOOPBACK_ONLY.items() if v} == {"PRIVATE_NETWORK"}


@pytest.mark.parametrize("bad", ["relative/run", "/with space", "/with:colon", '/q"uote', "/d$ollar"])
def test_bind_flags_refuse_paths_nspawn_or_the_conf_would_split(bad: str) -> None:
    with pytest.raises(BadRequest):
        bind_flags(bad, "/ok", "/ok", "/ok")
    with pytest.raises(BadRequest):
        bind_flags("/ok", "/ok", bad, "/ok")


def test_nix_string_escapes() -> None:
    assert nix_string('a"b\\c${d}\n') == '"a\\"b\\\\c\\${d}\\n"'


def test_agent_flake_names_the_agent_its_git_user_and_its_unit_role() -> None:
    text = agent_flake(AgentFlake(A, "builtin", "path:/nix/store/x-src?dir=nix"))
    assert 'inputs.hyperhive.url = "path:/nix/store/x-src?dir=nix";' in text
    assert 'name = lib.mkForce "alice";' in text and 'email = lib.mkForce "alice@hyperhive.local";' in text
    assert 'role = "agent";' in text and 'socketDir = "/hive/run";' in text
    assert 'stateDir = "/hive/state";' in text and 'workspaceDir = "/hive/work";' in text
    assert 'role = "manager";' in agent_flake(AgentFlake(M, "builtin", "path:/x"))


# --- the backend against the fakes ------------------------------------------------------
@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fakes:
    f = install(tmp_path / "fake")
    for key, value in f.env.items():
        monkeypatch.setenv(key, value)
    return f


@pytest.fixture
def backend(tmp_path: Path, fakes: Fakes) -> Iterator[NixosBackend]:
    paths = StatePaths(tmp_path / "state")
    paths.create_agent(A, AgentConfig())
    b = NixosBackend.from_env(paths)
    assert b.options.conf_dir == fakes.conf_dir and b.options.poll_seconds == 0.1
    yield b
    # A watcher left polling would read the next test's fakes (its environment)
    # and report that test's stop as this test's container ending.
    b.close()


def limits_call(name: AgentName = A, memory_mb: int = 4096, pids: int = 512) -> list[str]:
    return argv.set_limits_argv(name, memory_mb, pids)


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
    exits: list[tuple[int, str | None]] = []
    h = backend.start(A, "builtin", lambda rc, reason: exits.append((rc, reason)))  # creates on first start
    wait_for(lambda: h.pid == 4242, timeout=5, what="the watcher's first poll")
    h = backend.restart(h)
    h2 = backend.rebuild(A, "builtin", h)
    assert h2 is not None
    assert backend.stop(h2) == 0
    assert backend.rebuild(A, "builtin") is None  # stopped: no restart
    backend.destroy(A)
    assert fakes.calls() == [
        ["nixos-container", "create", "hh-alice", "--flake", flake],
        limits_call(),
        ["nixos-container", "start", "hh-alice"],
        ["nixos-container", "restart", "hh-alice"],
        ["nixos-container", "update", "hh-alice", "--flake", flake],
        limits_call(),  # the applied config may have new limits
        ["nixos-container", "restart", "hh-alice"],
        ["nixos-container", "stop", "hh-alice"],
        ["nixos-container", "update", "hh-alice", "--flake", flake],  # stopped: the next start sets them
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
    start, stop, limits = argv.start_argv(A), argv.stop_argv(A), limits_call()

    def cycle(driver: str = "builtin") -> list[list[str]]:
        before = len(fakes.calls())
        backend.stop(backend.start(A, driver, lambda rc, reason: None))
        return fakes.calls()[before:]

    assert [c[1] for c in cycle()] == ["create", "set-property", "start", "stop"]
    assert cycle() == [limits, start, stop]  # nothing changed: no build
    (applied / "agent.nix").write_text("{ pkgs, ... }: { environment.systemPackages = [ pkgs.jq ]; }\n")
    assert cycle() == [update, limits, start, stop]
    (applied / "agent.json").write_text('{"allowed_recipients": ["m1nd"]}\n')  # the daemon's, not nix's
    (applied / "flake.lock").write_text("{}\n")
    assert cycle() == [limits, start, stop]
    assert cycle(driver="claude") == [update, limits, start, stop]  # the generated flake changed
    assert 'driver = "claude";' in (applied / "flake.nix").read_text()
    # A config swapped in whole (as an approved commit is): agent.nix is kept if
    # the tree has one, the flake regenerated, and the container rebuilt.
    for f in applied.iterdir():
        f.unlink()
    assert cycle(driver="claude") == [update, limits, start, stop]
    assert (applied / "flake.nix").exists() and (applied / "agent.nix").exists()


def test_limits_come_from_the_applied_config_else_the_defaults(backend: NixosBackend, fakes: Fakes) -> None:
    applied = backend.paths.applied(A)
    assert backend.default_limits == DEFAULT_LIMITS == Limits(4096, 512)
    backend.stop(backend.start(A, "builtin", lambda rc, reason: None))
    (applied / "agent.json").write_text(json.dumps({"limits": {"memory_mb": 1024}}))
    backend.stop(backend.start(A, "builtin", lambda rc, reason: None))
    (applied / "agent.json").write_text(json.dumps({"limits": {"memory_mb": 2048, "pids": 128}}))
    h = backend.start(A, "builtin", lambda rc, reason: None)
    (applied / "agent.json").write_text(json.dumps({"limits": {"pids": 256}}))
    backend.rebuild(A, "builtin", h)  # a running container gets the new limits with its restart
    assert [c for c in fakes.calls() if c[1] == "set-property"] == [
        limits_call(), limits_call(memory_mb=1024), limits_call(memory_mb=2048, pids=128), limits_call(pids=256)]
    # The daemon's defaults, for agents that set none.
    other = NixosBackend.from_env(backend.paths, limits=Limits(512, 64))
    (applied / "agent.json").write_text("{}\n")
    assert other.limits(A) == Limits(512, 64)
    (applied / "agent.json").write_text(json.dumps({"limits": {"pids": 100}}))
    assert other.limits(A) == Limits(512, 100)


def test_a_failing_set_property_does_not_start_the_container(backend: NixosBackend, fakes: Fakes) -> None:
    fakes.fail("systemctl", "set-property", "Failed to set unit properties: Access denied\n")
    with pytest.raises(BackendFailed) as err:
        backend.start(A, "builtin", lambda rc, reason: None)
    assert "Access denied" in err.value.message and not fakes.machine_running("hh-alice")
    assert [c[1] for c in fakes.calls()] == ["create", "set-property"]


def test_a_stop_without_grace_terminates_the_machine(backend: NixosBackend, fakes: Fakes) -> None:
    exits: list[tuple[int, str | None]] = []
    h = backend.start(A, "builtin", lambda rc, reason: exits.append((rc, reason)))
    assert backend.stop(h, timeout=0.0) == -9
    assert fakes.calls()[-1] == argv.terminate_argv(A)
    assert not fakes.machine_running("hh-alice") and exits == []


def test_create_writes_the_flake_the_template_and_the_binds(backend: NixosBackend, fakes: Fakes) -> None:
    backend.paths.workspace(A).rmdir()  # an agent laid out before workspaces: made, or nspawn cannot bind it
    backend.create(A, "builtin")
    applied = backend.paths.applied(A)
    assert (applied / "agent.nix").read_text() == (REPO_NIX / "agent.nix").read_text()
    assert 'name = lib.mkForce "alice";' in (applied / "flake.nix").read_text()
    conf = (fakes.conf_dir / "hh-alice.conf").read_text()
    p = backend.paths
    flags = bind_flags(str(p.run(A)), str(p.state(A)), str(p.workspace(A)), str(applied))
    assert f'EXTRA_NSPAWN_FLAGS="{flags}"\n' in conf and p.workspace(A).is_dir()
    assert f"--bind-ro={p.run(A)}:/hive/run " in conf and f"--bind={p.workspace(A)}:/hive/work " in conf
    # A network of its own: no veth (no address either side), no bridge, no port.
    assert "PRIVATE_NETWORK=1\n" in conf and "HOST_ADDRESS=\n" in conf and "LOCAL_ADDRESS=\n" in conf
    assert "10.233." not in conf and "HOST_PORT=\n" in conf and "HOST_BRIDGE=\n" in conf
    assert f"FLAKE=path:{applied}\n" in conf and "AUTO_START=0\n" in conf  # what nixos-container wrote is kept
    with pytest.raises(Conflict):
        backend.create(A, "builtin")


def test_a_start_rewrites_the_conf_of_an_older_hive(backend: NixosBackend, fakes: Fakes) -> None:
    backend.create(A, "builtin")
    conf = fakes.conf_dir / "hh-alice.conf"
    new = conf.read_text()
    conf.write_text(f"PRIVATE_NETWORK=0\nFLAKE=path:{backend.paths.applied(A)}\nAUTO_START=0\n"
                    f'EXTRA_NSPAWN_FLAGS="--bind={backend.paths.run(A)}:/hive/run"\n')
    backend.stop(backend.start(A, "builtin", lambda rc, reason: None))
    assert sorted(conf.read_text().splitlines()) == sorted(new.splitlines())


def test_destroy_purge_removes_the_agents_dirs(backend: NixosBackend, fakes: Fakes) -> None:
    backend.create(A, "builtin")
    backend.destroy(A, purge=True)
    assert not backend.paths.agent(A).exists() and not backend.paths.applied(A).exists()
    assert backend.paths.root.exists() and not (fakes.conf_dir / "hh-alice.conf").exists()


def test_a_failing_command_raises_with_its_stderr_and_changes_nothing(backend: NixosBackend, fakes: Fakes) -> None:
    fakes.fail("nixos-container", "create", "error: flake 'path:/x' does not provide attribute 'container'\n")
    with pytest.raises(BackendFailed) as err:
        backend.start(A, "builtin", lambda rc, reason: None)
    assert "does not provide attribute 'container'" in err.value.message
    assert err.value.code == "backend_failed" and "nixos-container create hh-alice" in err.value.message
    assert not fakes.machine_running("hh-alice")
    assert [c[1] for c in fakes.calls()] == ["create"]  # no start after a failed create


def test_journal_returns_the_output_of_the_documented_command(backend: NixosBackend, fakes: Fakes) -> None:
    out = backend.journal(A, "harness", 100)
    assert out.splitlines()[0].endswith("harness up")
    assert fakes.calls() == [argv.journal_argv(A, "harness", 100)]


def test_web_port_is_the_sticky_port(backend: NixosBackend) -> None:
    assert backend.web_port(A) is None
    (backend.paths.agent(A) / "port").write_text("7931\n")
    assert backend.web_port(A) == 7931 and backend.kind == "nixos" and backend.sandboxed is True


def test_a_vanished_machine_is_reported_with_the_harness_exit_status(backend: NixosBackend, fakes: Fakes) -> None:
    exits: list[tuple[int, str | None]] = []
    reported = threading.Event()

    def on_exit(rc: int, reason: str | None) -> None:
        exits.append((rc, reason))
        reported.set()

    backend.start(A, "builtin", on_exit)
    (backend.paths.state(A) / "harness.exit").write_text("exit-code exited 3\n")
    fakes.vanish("hh-alice")
    assert reported.wait(5)
    assert exits == [(3, None)]
    assert fakes.calls()[-1] == argv.unit_result_argv(A)  # asked once how the unit ended
    # Stopped from outside (no record): reported as killed by SIGTERM.
    reported.clear()
    backend.start(A, "builtin", on_exit)
    assert not (backend.paths.state(A) / "harness.exit").exists()  # a start clears the old record
    fakes.vanish("hh-alice")
    assert reported.wait(5)
    assert exits == [(3, None), (-15, None)]


def test_an_oom_kill_is_reported_as_out_of_memory(backend: NixosBackend, fakes: Fakes) -> None:
    exits: list[tuple[int, str | None]] = []
    reported = threading.Event()

    def on_exit(rc: int, reason: str | None) -> None:
        exits.append((rc, reason))
        reported.set()

    # The harness unit inside was OOM-killed (OOMPolicy=stop) and recorded it.
    backend.start(A, "builtin", on_exit)
    (backend.paths.state(A) / "harness.exit").write_text("oom-kill killed KILL\n")
    fakes.vanish("hh-alice")
    assert reported.wait(5)
    # The machine went down whole (no record); the host's unit says Result=oom-kill.
    reported.clear()
    backend.start(A, "builtin", on_exit)
    fakes.oom("hh-alice")
    assert reported.wait(5)
    # systemctl show failing: the record alone decides (here: no OOM).
    reported.clear()
    backend.start(A, "builtin", on_exit)
    fakes.fail("systemctl", "show", "Failed to connect to bus\n")
    (backend.paths.state(A) / "harness.exit").write_text("exit-code exited 1\n")
    fakes.vanish("hh-alice")
    assert reported.wait(5)
    assert exits == [(-9, "out of memory"), (-9, "out of memory"), (1, None)]


def test_machined_failing_is_not_a_crash(backend: NixosBackend, fakes: Fakes) -> None:
    exits: list[tuple[int, str | None]] = []
    fakes.fail("machinectl", "show", "Failed to connect to bus: Connection refused\n")
    h = backend.start(A, "builtin", lambda rc, reason: exits.append((rc, reason)))
    wait_for(lambda: len(fakes.calls(polls=True)) >= 6, timeout=5, what="several failed polls")
    assert exits == [] and h.pid is None
    fakes.heal("machinectl", "show")
    wait_for(lambda: h.pid == 4242, timeout=5, what="polling to recover")
    backend.stop(h)
    assert exits == []


def test_close_stops_every_watcher_and_leaves_the_machines_running(backend: NixosBackend, fakes: Fakes) -> None:
    exits: list[tuple[int, str | None]] = []
    backend.start(A, "builtin", lambda rc, reason: exits.append((rc, reason)))
    watchers = [t for t in threading.enumerate() if t.name == "watch-alice"]
    assert watchers
    backend.close()
    for t in watchers:
        t.join(timeout=10)
        assert not t.is_alive()
    fakes.vanish("hh-alice")  # no watcher is left to call it an exit
    assert exits == [] and [c[1] for c in fakes.calls()][-1] == "start"
