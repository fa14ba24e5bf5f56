"""A daemon that is not root sandboxes its agents just the same (issue 11,
build 2): uid 1000 in their own user namespace, no capability, no host
network; only the cgroup limits need root here (logged as `backend.no_limits`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from support import passable, wait_for

from hyperhive import client

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None or shutil.which("bwrap") is None,
                       reason="needs root to become an unprivileged user (setpriv), and bubblewrap"),
]

NOBODY = 65534


def test_an_unprivileged_daemon_still_sandboxes_its_agents(tmp_path: Path) -> None:
    passable(tmp_path)
    home = tmp_path / "nobody"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    state = home / "state"
    log = open(home / "daemon.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        ["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups",
         sys.executable, "-m", "hyperhive", "--state-dir", str(state), "serve", "--listen", "127.0.0.1:0",
         "--sandbox", "on"],
        stdout=log, stderr=subprocess.STDOUT, env={"PATH": os.environ["PATH"], "HOME": str(home),
                                                   "ANTHROPIC_API_KEY": "sk-ant-nonroot-secret"},
        cwd=home,
    )
    log.close()
    admin = state / "run" / "admin.sock"

    def req(op: str, **fields: object) -> dict[str, object]:
        return client.request(admin, op, timeout=60, **fields)

    try:
        wait_for(lambda: admin.exists() and req("ping"), timeout=30, what="the daemon")
        req("spawn", name="alice")
        wait_for(lambda: {c["name"]: c for c in req("ls")["containers"]}["alice"]["parked"]["system"] >= 1,
                 timeout=30, what="alice's harness")
        token = uuid.uuid4().hex[:8]
        req("send", to="alice", body=f"run echo {token}; id -u; grep CapEff /proc/self/status; "
                                      "cat /proc/self/environ | tr '\\0' '\\n' | grep -c nonroot-secret; "
                                      "python3 -c \"import socket; socket.create_connection(('127.0.0.1', 22), 3)\" "
                                      "2>&1 | tail -1")

        def reply() -> str | None:
            rows = req("inbox", limit=20)["messages"]
            return next((str(m["body"]) for m in rows if token in str(m["body"])), None)  # type: ignore[index]

        body = wait_for(reply, timeout=30, what="alice's run reply")
        lines = body.split(token + "\n", 1)[1].splitlines()
        assert lines[0] == "1000" and lines[1] == "CapEff:\t0000000000000000", body
        assert lines[2] == "0"  # the daemon's key is nowhere in the agent's environment
        assert "ConnectionRefusedError" in lines[3]  # its own loopback, not the host's
        row = {c["name"]: c for c in req("ls")["containers"]}["alice"]
        assert row["sandboxed"] is True
        st = (state / "agents" / "alice" / "state").stat()
        assert (st.st_uid, st.st_mode & 0o777) == (NOBODY, 0o700)
        events = [json.loads(line) for line in (home / "daemon.log").read_text().splitlines() if line.startswith("{")]
        assert any(e.get("event") == "backend.no_limits" for e in events)
        assert not any(e.get("event") == "backend.unsandboxed" for e in events)
    finally:
        proc.terminate()
        proc.wait(30)
