"""The tether that ends a ray-placed harness with its actor (issue 18), and what
the ray backend costs a host without Ray: nothing (ray_install)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from support import pid_alive, wait_for

from hyperhive.backends import ray_install
from hyperhive.backends.ray_tether import DONE

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


def _tether(pgid: int) -> int:
    """Start a tether on ``pgid``; the write end of its pipe (the actor's)."""
    read_end, write_end = os.pipe()
    p = subprocess.Popen([sys.executable, "-I", "-m", "hyperhive.backends.ray_tether", str(pgid)], stdin=read_end,
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
    r = subprocess.run([sys.executable, "-I", "-m", "hyperhive.backends.ray_tether", "1"], capture_output=True,
                       stdin=subprocess.DEVNULL, timeout=30)
    assert r.returncode == 2 and b"usage" in r.stderr


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
