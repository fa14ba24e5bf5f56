"""The daemon process as a whole: its lock, its shutdown."""

from __future__ import annotations

import subprocess
import sys

import pytest
from support import Hive, pid_alive, wait_for

pytestmark = pytest.mark.e2e  # every test here starts a daemon


def test_a_second_daemon_on_the_same_state_dir_is_refused(hive: Hive) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "hyperhive", "--state-dir", str(hive.state_dir), "serve"],
        capture_output=True, text=True, timeout=30,
    )
    assert out.returncode == 1
    assert out.stderr == f"hive: another daemon is running on {hive.state_dir} (it holds run/daemon.lock)\n"
    assert "Traceback" not in out.stdout
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


def test_a_start_that_fails_late_stops_everything_it_started_and_exits(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The admin socket binds last: a regular file in its place fails the start
    after the actors and m1nd's harness are up; all of it must go and the
    process must exit (no actor thread left to keep it alive)."""
    import json

    state = tmp_path / "state"
    (state / "run").mkdir(parents=True)
    (state / "run" / "admin.sock").write_text("not a socket")
    out = subprocess.run(
        [sys.executable, "-m", "hyperhive", "--state-dir", str(state), "serve", "--listen", "127.0.0.1:0",
         "--sandbox", "off"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 1, out.stdout[-2000:]
    events = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    names = [e["event"] for e in events]
    assert "daemon.start_aborted" in names and names.index("daemon.start_aborted") < names.index("daemon.stopped")
    started = [e["pid"] for e in events if e["event"] == "container.start"]
    assert started, "m1nd's harness had started before the failure"
    wait_for(lambda: not any(pid_alive(p) for p in started), timeout=10, what="harnesses gone")
    assert (state / "run" / "admin.sock").read_text() == "not a socket"  # refused, not replaced
