"""The local backend, run for real: bubblewrap, the agent's own uid, its cgroup.

The harnesses here start with no daemon behind their socket (they wait for
it), which is enough to look at the processes the backend made. The attacks
from inside a sandbox are in tests/security/test_sandbox.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support import harness_below, passable, proc_tree, wait_for

from hyperhive.backends.local import LocalBackend, harness_argv, probe_sandbox, unreachable_for_agents
from hyperhive.errors import SandboxUnavailable
from hyperhive.names import AgentName
from hyperhive.paths import AgentConfig, Limits, StatePaths

ROOT = os.geteuid() == 0
SECRET = "sk-ant-local-backend-test-secret"


@pytest.fixture
def paths(tmp_path: Path) -> StatePaths:
    passable(tmp_path)
    p = StatePaths(tmp_path / "state")
    for name in ("a", "b"):
        p.create_agent(AgentName(name), AgentConfig())
    return p


def _status(pid: int) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)


def test_harness_argv_puts_the_web_ui_on_a_socket_and_the_bridges_on_fixed_ports(paths: StatePaths) -> None:
    argv = harness_argv(paths, AgentName("a"), "builtin", sandboxed=True)
    assert argv[1:5] == ["-I", "-m", "hyperhive", "harness"]
    flags = dict(zip(argv[5::2], argv[6::2], strict=False))
    assert flags["--web-socket"] == str(paths.web_socket(AgentName("a")))
    assert flags["--api-socket"] == str(paths.api_socket(AgentName("a")))
    assert flags["--bridge-ports"] == "fixed" and argv[-1] == "--sandboxed"
    assert "--web-port" not in argv
    loose = harness_argv(paths, AgentName("a"), "builtin", sandboxed=False)
    assert "--sandboxed" not in loose and loose[loose.index("--bridge-ports") + 1] == "any"


@pytest.mark.skipif(not ROOT, reason="the root daemon case")
def test_a_state_dir_agents_cannot_pass_means_no_agent_uids_and_no_sandbox(tmp_path: Path) -> None:
    """Never a harness that crash-loops on a dir it cannot pass: the root daemon
    runs it as itself then (logged), and says why it is unsandboxed."""
    passable(tmp_path)
    hidden = tmp_path / "locked"
    hidden.mkdir()
    os.chmod(hidden, 0o700)
    paths = StatePaths(hidden / "state")
    paths.root.mkdir()
    reason = unreachable_for_agents(paths)
    assert reason is not None and "o+x" in reason and str(hidden) in reason
    for mode in ("auto", "off"):
        backend = LocalBackend(paths, mode, cgroups=False)
        assert backend.switch_uid is False and backend.sandboxed is False
        assert backend.account(AgentName("a")).uid == 0
    assert backend.unsandboxed_reason == "sandbox=off"
    assert LocalBackend(paths, "auto", cgroups=False).unsandboxed_reason == reason
    with pytest.raises(SandboxUnavailable) as err:
        LocalBackend(paths, "on", cgroups=False)
    assert "o+x" in err.value.message


@pytest.fixture
def backend(paths: StatePaths, monkeypatch: pytest.MonkeyPatch) -> LocalBackend:
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    if probe_sandbox(paths, 1_900_065_535 if ROOT else None) is not None:
        pytest.skip("bubblewrap is not usable here")
    return LocalBackend(paths, "on", limits=Limits(512, 128))


@pytest.mark.e2e  # a harness in a real bwrap sandbox
def test_a_sandboxed_harness_runs_as_its_own_uid_in_its_cgroup_with_a_clean_environment(
        backend: LocalBackend, paths: StatePaths) -> None:
    a = AgentName("a")
    exits: list[tuple[int, str | None]] = []
    handle = backend.start(a, "builtin", lambda rc, reason: exits.append((rc, reason)))
    try:
        pid = wait_for(lambda: harness_below(handle.pid), timeout=10, what="the harness inside bwrap")
        st = _status(pid)
        uid = int((paths.agent(a) / "uid").read_text())
        if ROOT:
            assert st["Uid"].split()[0] == str(uid) and uid >= 1_900_000_000
        assert st["CapEff"] == "0000000000000000" and st["NoNewPrivs"] == "1"
        for p in proc_tree(handle.pid):  # bwrap's own processes too: their environ shows inside
            env = Path(f"/proc/{p}/environ").read_bytes()
            assert SECRET.encode() not in env
        if backend.cgroups is not None:
            cg = Path(f"/proc/{pid}/cgroup").read_text()
            assert "hyperhive-" in cg and cg.count("/a\n") >= 1, cg
            usage = backend.usage(a)
            assert usage is not None and (usage["pids"] or 0) >= 2
        assert paths.harness_log(a).parent == paths.agent(a)  # the daemon's, not in the agent's state
        assert not (paths.state(a) / "harness.log").exists()
    finally:
        backend.stop(handle, timeout=2)
    assert not any(os.path.exists(f"/proc/{p}") for p in [handle.pid])
    wait_for(lambda: exits, timeout=10, what="the exit report")
    assert exits[0][1] is None


@pytest.mark.e2e  # a harness in a real bwrap sandbox
def test_a_harness_stopped_while_bwrap_starts_it_does_not_survive(backend: LocalBackend, paths: StatePaths) -> None:
    """SIGTERM can reach bwrap just after it forked the harness; nothing of the
    agent may be left after stop()."""
    for _ in range(6):
        handle = backend.start(AgentName("a"), "builtin", lambda rc, reason: None)
        backend.stop(handle, timeout=0.0)
        if backend.cgroups is not None:
            assert backend.cgroups.agent("a").pids() == []
        pid = handle.pid
        wait_for(lambda pid=pid: not harness_below(pid), timeout=5, what="no harness left running")  # type: ignore[misc]


def test_the_log_relay_rotates_and_never_follows_a_link(tmp_path: Path) -> None:
    import subprocess
    import sys

    from hyperhive.sandbox.log_relay import relay

    log = tmp_path / "harness.log"
    proc = subprocess.Popen([sys.executable, "-c", "import sys\nfor i in range(3000): print('x' * 99)"],
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None
    relay(proc.stdout.fileno(), str(log), limit=100_000)
    proc.wait()
    rotated = log.with_name("harness.log.1")
    assert rotated.stat().st_size <= 100_000 and log.stat().st_size <= 100_000
    # The newest output is in the live log (a pipe read may end anywhere in a line: the
    # last line can straddle the rotation).
    live = log.read_text()
    assert live.endswith("\n") and (rotated.read_text() + live).endswith("\n" + "x" * 99 + "\n")
    target = tmp_path / "host-file"
    target.write_text("host\n")
    link = tmp_path / "linked.log"
    link.symlink_to(target)
    proc = subprocess.Popen([sys.executable, "-c", "print('y' * 200000)"], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    relay(proc.stdout.fileno(), str(link))  # drained (the harness never stalls on a full pipe), the link never written
    assert proc.wait(10) == 0 and target.read_text() == "host\n"
