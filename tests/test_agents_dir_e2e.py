"""``--agents-dir`` for real (issue 16): a daemon whose agents live on a small
tmpfs of their own (root only), hive.sqlite on the test's disk. Their dirs are
there and nowhere else, each harness reads its applied config from the state
dir (``--applied-dir``), and when an agent fills its filesystem the operator's
and every agent's sends still commit. A restart on the same dir adopts the
agents; a start with another place, or with the filesystem not mounted, is
refused in one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from adoption_support import ask, pids
from support import Hive, fill_disk, pid_alive, small_tmpfs, wait_for

from hyperhive import client
from hyperhive.agents_dir import MARKER, OWNER_MARKER
from hyperhive.paths import StatePaths

pytestmark = pytest.mark.e2e  # daemons and sandboxed harnesses


@pytest.fixture
def agents_fs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = small_tmpfs(tmp_path / "agents", "16m")
    try:
        where = mount.__enter__()
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    try:
        yield where
    finally:
        mount.__exit__(None, None, None)


def _serve(state: Path, *args: str) -> str:
    """The one line a refused `hive serve` prints (it must exit 1, no traceback)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYPERHIVE_")}
    r = subprocess.run([sys.executable, "-m", "hyperhive", "serve", "--state-dir", str(state), "--listen",
                        "127.0.0.1:0", *args], capture_output=True, text=True, timeout=60, env=env,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 1 and "Traceback" not in r.stdout + r.stderr, (r.returncode, r.stderr[-2000:])
    [line] = r.stderr.splitlines()
    return line


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_agents_on_a_filesystem_of_their_own(tmp_path: Path, agents_fs: Path) -> None:
    state = tmp_path / "state"
    hive = Hive(state, ["--agents-dir", str(agents_fs), "--keep-agents"])
    hive.paths = StatePaths(state, agents_root=agents_fs)  # where the test finds sockets and harnesses
    try:
        hive.start()
        hive.spawn("worker")
        hive.spawn("peer")
        for name in ("m1nd", "worker", "peer"):
            for leaf in ("state", "work", "run", "config"):
                assert (agents_fs / name / leaf).is_dir(), (name, leaf)
            assert (agents_fs / name / "run" / "hive.sock").is_socket()
        assert not (state / "agents").exists(), "an agent's dir was made under the state dir"
        assert (state / MARKER).read_text() == f"{agents_fs}\n"
        assert (agents_fs / OWNER_MARKER).read_text() == f"{state.resolve()}\n"
        assert os.stat(agents_fs).st_mode & 0o777 == 0o711

        ask(hive, "worker", "hello from the operator")  # its harness runs and answers
        applied = str(state / "applied" / "worker" / "agent.json")
        wait_for(lambda: applied in (agents_fs / "worker" / "harness.log").read_text(), timeout=10,
                 what="the harness reading its applied config from the state dir")

        # The agent fills its filesystem (its workspace, as its own commands would).
        fill_disk(agents_fs / "worker" / "work" / "filler")
        assert _free(agents_fs) < 1 << 20, _free(agents_fs)
        assert _free(state) > 64 << 20, "the state dir's own disk is too full for this test"
        # hive.sqlite is elsewhere: nothing refuses a send (no storage error, no --min-free-mb floor).
        assert hive.admin("send", to="peer", body="the operator, the agents' disk full")["message_id"] > 0
        for name in ("worker", "peer"):
            got = client.request(hive.socket(name), "send", timeout=30, to="operator",
                                 body=f"{name}, its disk full")
            assert got["message_id"] > 0, got
        ask(hive, "worker", "still there on a full disk?")  # its reply goes through the daemon too
        (agents_fs / "worker" / "work" / "filler").unlink()

        # A restart on the same dir adopts the agents as they run.
        before = pids(hive)
        assert set(before) == {"m1nd", "worker", "peer"}
        assert hive.proc is not None
        hive.proc.send_signal(signal.SIGTERM)  # --keep-agents: the harnesses are left running
        assert hive.proc.wait(30) == 0
        assert all(pid_alive(p) for p in before.values())
        hive.extra_args = ["--agents-dir", str(agents_fs)]
        hive.start()
        assert pids(hive) == before
        ask(hive, "peer", "after the restart")
        hive.stop()  # this one stops the agents
        for pid in before.values():
            wait_for(lambda p=pid: not pid_alive(p), timeout=15, what=f"harness {pid} stopped")  # type: ignore[misc]

        # Another place than where the agents are: refused, naming where they are.
        other = tmp_path / "other-agents"
        assert _serve(state, "--agents-dir", str(other)) == (
            f"hive: the agents are in {agents_fs}, not {other}: start with --agents-dir {agents_fs} "
            f"(or move them there, then remove {state / MARKER})")
        assert not other.exists()
        assert f"the agents are in {agents_fs}, not {state / 'agents'}" in _serve(state)
        # Its filesystem not mounted: the empty mount point is not taken for an empty agents dir.
        subprocess.run(["umount", str(agents_fs)], check=True)
        line = _serve(state, "--agents-dir", str(agents_fs))
        assert f"agents_dir {agents_fs} has no {OWNER_MARKER}, yet this hive's agents were there" in line
        assert "is its filesystem mounted?" in line
    finally:
        hive.stop()
