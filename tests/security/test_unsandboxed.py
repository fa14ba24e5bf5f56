"""When the sandbox cannot be had (issue 11, build 9): every start says so in
the log, every surface shows the `unsandboxed` badge, and the builtin driver
refuses `run`."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from support import Hive, wait_for

pytestmark = pytest.mark.e2e


def test_sandbox_off_is_logged_at_every_start_badged_and_run_is_refused(tmp_path: Path) -> None:
    hive = Hive(tmp_path / "state", extra_args=["--sandbox", "off"]).start()
    try:
        hive.spawn("alice")
        hive.admin("restart", name="alice")
        starts = [e for e in hive.log_events() if e.get("event") == "backend.unsandboxed" and e.get("agent")]
        assert {e["agent"] for e in starts} == {"m1nd", "alice"}
        assert len([e for e in starts if e["agent"] == "alice"]) >= 2  # the spawn and the restart
        assert all(e["reason"] == "sandbox=off" for e in starts)
        row = hive.ls()["alice"]
        assert row["sandboxed"] is False and "unsandboxed" in row["badges"]
        token = uuid.uuid4().hex[:8]
        hive.admin("send", to="alice", body=f"run touch /tmp/{token}")
        reply = wait_for(lambda: [m["body"] for m in hive.admin("inbox", limit=50)["messages"]
                                  if m["from"] == "alice" and "run refused" in m["body"]], timeout=30)
        assert "not sandboxed" in reply[0]
        assert not Path(f"/tmp/{token}").exists()
    finally:
        hive.stop()
