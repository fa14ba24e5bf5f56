"""The tether that ends a ray-placed harness with its actor (issue 18), and what
the ray backend costs a host without Ray: nothing (ray_install)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import pid_alive, wait_for

from hyperhive.backends import ray_install
from hyperhive.backends.ray_tether import DONE, clear_run_dir, identity

# A stand-in harness tree: a group leader in a session of its own, with a child.
_TREE = "import subprocess, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"


@pytest.fixture
def tree() -> Iterator[subprocess.Popen[bytes]]:
    leader = subprocess.Popen([sys.executable, "-c", _TREE], start_new_session=True)
    try:
        yield leader
    finally:
        try:
            os.killpg(leader.pid, 9)
        except ProcessLookupError:
            pass
        leader.wait()


def _children(pid: int) -> list[int]:
    return [int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split()]


def _tether(pgid: int | None, *args: str) -> int:
    """Start a tether on ``pgid`` (or with ``args``); the write end of its pipe (the actor's)."""
    read_end, write_end = os.pipe()
    argv = [str(pgid)] if pgid is not None else list(args)
    p = subprocess.Popen([sys.executable, "-I", "-m", "hyperhive.backends.ray_tether", *argv], stdin=read_end,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True)
    os.close(read_end)
    assert p.wait(10) == 0  # it forked and left: the tether proper is no child of ours
    return write_end


def test_the_harness_tree_dies_when_the_actor_does(tree: subprocess.Popen[bytes]) -> None:
    child = wait_for(lambda: _children(tree.pid), what="the tree's child")[0]
    write_end = _tether(tree.pid)
    assert pid_alive(tree.pid) and pid_alive(child)
    os.close(write_end)  # the actor's process is gone: its end of the pipe closes
    wait_for(lambda: tree.poll() is not None and not pid_alive(child), timeout=10, what="the tree killed")
    assert tree.returncode == -9


def test_a_harness_that_ended_normally_leaves_nothing_to_do(tree: subprocess.Popen[bytes]) -> None:
    write_end = _tether(tree.pid)
    os.write(write_end, DONE)
    os.close(write_end)
    with pytest.raises(subprocess.TimeoutExpired):
        tree.wait(1.0)  # the group (a pid the tether no longer owns) is left alone


def test_a_bad_command_line_is_refused() -> None:
    for argv in (["1"], ["--run-dir"], ["--run-dir", "relative", "1:2:3"], ["--run-dir", "/tmp/x", "1:2"],
                 ["--run-dir", "/tmp/x", "1:2:x"]):
        r = subprocess.run([sys.executable, "-I", "-m", "hyperhive.backends.ray_tether", *argv],
                           capture_output=True, stdin=subprocess.DEVNULL, timeout=30)
        assert r.returncode == 2 and b"usage" in r.stderr, argv


def _bind(path: Path) -> tuple[socket.socket, str]:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    return s, identity(os.lstat(path))


def test_the_relay_s_sockets_go_when_the_actor_dies_and_a_new_actor_s_stay(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    old, old_id = _bind(run / "hive.sock")
    gone, gone_id = _bind(run / "mcp.sock")
    old.close()
    gone.close()
    write_end = _tether(None, "--run-dir", str(run), old_id, gone_id)
    (run / "mcp.sock").unlink()
    new, _ = _bind(run / "mcp.sock")  # a restarted actor on this node bound its own meanwhile
    try:
        os.close(write_end)  # the actor's process is gone
        wait_for(lambda: not (run / "hive.sock").exists(), timeout=10, what="the dead actor's socket removed")
        assert (run / "mcp.sock").exists() and run.is_dir()  # another inode: left, and so is the dir
    finally:
        new.close()
    (run / "mcp.sock").unlink()
    write_end = _tether(None, "--run-dir", str(run))
    os.close(write_end)
    wait_for(lambda: not run.exists(), timeout=10, what="the empty run dir removed")


def test_a_destroyed_actor_s_run_dir_is_left_to_the_actor(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    s, sid = _bind(run / "hive.sock")
    s.close()
    write_end = _tether(None, "--run-dir", str(run), sid)
    assert wait_for(lambda: _tethers_of(run), what="the tether running")
    os.write(write_end, DONE)
    os.close(write_end)
    wait_for(lambda: not _tethers_of(run), timeout=10, what="the tether ended")
    assert (run / "hive.sock").exists()
    clear_run_dir(tmp_path / "nowhere", [])  # nothing there: nothing to do, no error


def _tethers_of(run: Path) -> list[int]:
    """The pids of tethers on ``run`` (the one we started forked away from us)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                argv = Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"hyperhive.backends.ray_tether" in argv and str(run).encode() in argv:
                out.append(int(d))
    return out


def test_ray_is_optional(monkeypatch: pytest.MonkeyPatch) -> None:
    """Importing hyperhive (the daemon, the CLI) never imports Ray; without Ray,
    ``--backend ray`` has one line saying how to install it."""
    code = ("import sys, hyperhive.daemon, hyperhive.cli, hyperhive.placement, hyperhive.backends.ray_install as r\n"
            "assert 'ray' not in sys.modules, 'ray imported'\nprint(r.ray_missing())")
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    found = ray_install.importlib.util.find_spec("ray") is not None
    assert out.stdout.strip() == ("None" if found else ray_install.ray_missing())
    monkeypatch.setattr(ray_install.importlib.util, "find_spec", lambda name: None)
    hint = ray_install.ray_missing()
    assert hint is not None and "pip install 'hyperhive[ray]'" in hint and "ray==2.60.0" in hint and "\n" not in hint
