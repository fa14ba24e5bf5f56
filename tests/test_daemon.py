"""The daemon process as a whole: its lock, its shutdown."""

from __future__ import annotations

import subprocess
import sys

from support import Hive, pid_alive, wait_for


def test_a_second_daemon_on_the_same_state_dir_is_refused(hive: Hive) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "hyperhive", "--state-dir", str(hive.state_dir), "serve"],
        capture_output=True, text=True, timeout=30,
    )
    assert out.returncode == 1
    assert '"event": "daemon.already_running"' in out.stdout
    assert hive.ls()["m1nd"]["state"] == "running"  # the first one is untouched


def test_sigterm_stops_every_harness_and_removes_the_admin_socket(hive: Hive) -> None:
    hive.spawn("a")
    pids = [c["pid"] for c in hive.ls().values()]
    assert len(pids) == 2 and all(pids)
    hive.stop()
    assert hive.proc is not None and hive.proc.returncode == 0
    wait_for(lambda: not any(pid_alive(p) for p in pids), timeout=5, what="harnesses gone")
    assert not hive.paths.admin_socket.exists()
    events = [e["event"] for e in hive.log_events()]
    assert events.index("daemon.stopping") < events.index("daemon.stopped")
