"""The local backend's sandbox, run for real with bubblewrap."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hyperhive.backends.local import bwrap_argv, bwrap_works, runtime_dirs
from hyperhive.names import AgentName
from hyperhive.paths import AgentConfig, StatePaths

PROBE = r"""
import json, os, sys
root, mine, other, admin_sock = sys.argv[1:5]
def writable(p):
    try:
        open(os.path.join(p, ".probe"), "w").close(); return True
    except OSError:
        return False
print(json.dumps({
    "state_listing": sorted(os.listdir(root)),
    "own_state_writable": writable(mine),
    "other_state_visible": os.path.exists(other),
    "admin_socket_visible": os.path.exists(admin_sock),
    "usr_writable": writable("/usr"),
    "home": os.environ.get("HOME"),
}))
"""


RUNTIME = runtime_dirs([Path("/tmp").resolve()])  # a checkout under /tmp (a CI clone) stays runnable


def test_runtime_dirs_bring_back_the_interpreter_and_package_only_when_hidden() -> None:
    import hyperhive

    venv = Path(sys.prefix).resolve()
    assert str(venv) in runtime_dirs([venv.parent])
    package_root = Path(hyperhive.__file__).resolve().parent.parent
    assert str(package_root) in runtime_dirs([package_root])
    assert runtime_dirs([Path("/nonexistent-hidden-dir")]) == []


@pytest.fixture
def paths(tmp_path: Path) -> StatePaths:
    p = StatePaths(tmp_path / "state")
    for name in ("a", "b"):
        p.create_agent(AgentName(name), AgentConfig())
    p.admin_socket.parent.mkdir(parents=True)
    p.admin_socket.write_text("stand-in")
    (p.state(AgentName("b")) / "secret").write_text("b's notes")
    return p


def test_bwrap_argv_hides_the_state_dir_and_binds_only_the_agents_own(paths: StatePaths) -> None:
    argv = bwrap_argv(paths, AgentName("a"), ["true"])
    root, state_a = str(paths.root), str(paths.state(AgentName("a")))
    assert argv[:3] == ["bwrap", "--ro-bind", "/"]
    tmpfs = argv.index(root) - 1
    assert argv[tmpfs] == "--tmpfs"
    assert argv.index("--bind") > tmpfs  # own dirs come back after the state dir is hidden
    assert ["--bind", state_a, state_a] == argv[argv.index(state_a) - 1: argv.index(state_a) + 2]
    assert str(paths.state(AgentName("b"))) not in argv
    assert "--die-with-parent" in argv and argv[-2:] == ["--", "true"]


@pytest.mark.skipif(not bwrap_works(), reason="bubblewrap is not usable on this machine")
def test_inside_the_sandbox_only_the_agents_own_dirs_exist(paths: StatePaths) -> None:
    a, b = AgentName("a"), AgentName("b")
    inner = [sys.executable, "-c", PROBE, str(paths.root), str(paths.state(a)),
             str(paths.state(b) / "secret"), str(paths.admin_socket)]
    argv = bwrap_argv(paths, a, inner, runtime=RUNTIME)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    import json
    seen = json.loads(out.stdout)
    assert seen["state_listing"] == ["agents", "applied"]
    assert seen["own_state_writable"] is True
    assert seen["other_state_visible"] is False
    assert seen["admin_socket_visible"] is False
    assert seen["usr_writable"] is False
    assert seen["home"] == str(paths.state(a))


def _harnesses_of(root: Path) -> list[int]:
    """Pids of processes whose command line names this state dir."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        if str(root).encode() in cmd and b"harness" in cmd:
            out.append(int(d.name))
    return out


@pytest.mark.skipif(not bwrap_works(), reason="bubblewrap is not usable here")
def test_a_harness_stopped_while_bwrap_starts_it_does_not_survive(paths: StatePaths) -> None:
    """SIGTERM can reach bwrap after it forked the harness but before
    --die-with-parent holds; the harness must still be gone after stop()."""
    from support import wait_for

    from hyperhive.backends.local import LocalBackend

    backend = LocalBackend(paths, "on")
    for _ in range(8):
        handle = backend.start(AgentName("a"), "builtin", lambda rc: None)
        backend.stop(handle, timeout=0.0)
        wait_for(lambda: not _harnesses_of(paths.root), timeout=5, what="no harness left running")


@pytest.mark.skipif(not bwrap_works(), reason="bubblewrap is not usable on this machine")
def test_the_manager_sees_every_config_repo_and_nothing_else_of_the_others(paths: StatePaths) -> None:
    from hyperhive.backends.local import LocalBackend

    m = AgentName("m1nd")
    paths.create_agent(m, AgentConfig())
    configs = LocalBackend(paths, "on")._config_dirs(m)
    assert configs == sorted(str(paths.config_dir(AgentName(n))) for n in ("a", "b", "m1nd"))
    assert LocalBackend(paths, "on")._config_dirs(AgentName("a")) == []
    probe = (
        "import os, sys; c, s = sys.argv[1:3]; open(os.path.join(c, 'x'), 'w').write('m1nd was here');"
        "print(os.path.exists(s))"
    )
    inner = [sys.executable, "-c", probe, str(paths.config_dir(AgentName("b"))), str(paths.state(AgentName("b")))]
    argv = bwrap_argv(paths, m, inner, configs, RUNTIME)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.strip() == "False"  # b's state stays hidden
    assert (paths.config_dir(AgentName("b")) / "x").read_text() == "m1nd was here"
