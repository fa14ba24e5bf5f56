"""F25/F39: everything the daemon writes while it runs is JSON lines that
journald can take, each with event, level and timestamp."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from nixos_fakes import install
from support import Hive, wait_for

from hyperhive.errors import HiveError

pytestmark = pytest.mark.e2e  # every test here starts a daemon


def check_lines(text: str) -> list[dict[str, object]]:
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        obj = json.loads(line)  # fails the test on any non-JSON line (a print, a bare traceback)
        assert isinstance(obj, dict), f"line {n} is not an object: {line}"
        missing = {"event", "level", "timestamp"} - set(obj)
        assert not missing, f"line {n} lacks {missing}: {line}"
        assert obj["level"] in ("debug", "info", "warning", "error", "critical"), line
        datetime.fromisoformat(str(obj["timestamp"]).replace("Z", "+00:00"))
        rows.append(obj)
    return rows


@pytest.mark.parametrize("backend", ["local", "nixos"])
def test_every_line_of_a_run_is_one_json_object(tmp_path: Path, backend: str) -> None:
    env = install(tmp_path / "fake").env if backend == "nixos" else {}
    h = Hive(tmp_path / "state", ["--backend", backend, "--sandbox", "off"], env=env).start()
    try:
        h.admin("spawn", name="a")
        h.admin("send", to="a", body="hello")
        with pytest.raises(HiveError):
            h.admin("start", name="nobody")  # a refused request is logged too
        h.admin("stop", name="a")
        wait_for(lambda: any(e["event"] == "daemon.ready" for e in h.log_events()), what="daemon.ready")
    finally:
        h.stop()
    assert h.proc is not None and h.proc.returncode == 0
    rows = check_lines(h.log_path.read_text())
    events = [r["event"] for r in rows]
    assert events.count("daemon.ready") == 1 and events[-1] == "daemon.stopped"
    assert len(rows) >= 10


def test_the_first_line_is_the_login_url_and_ready_says_how_many_agents(tmp_path: Path) -> None:
    h = Hive(tmp_path / "state", ["--sandbox", "off"]).start()
    try:
        wait_for(lambda: any(e["event"] == "daemon.ready" for e in h.log_events()), what="daemon.ready")
        events = h.log_events()
        url = h.login_url
    finally:
        h.stop()
    daemon = [e for e in events if e.get("logger") == "hyperhive.daemon"]
    assert daemon[0]["event"] == "daemon.dashboard" and daemon[0]["url"] == url
    assert events[0] is daemon[0] or events[0]["event"] == "daemon.file_limit"  # nothing else comes first
    [ready] = [e for e in events if e["event"] == "daemon.ready"]
    assert (ready["url"], ready["agents"], ready["started"]) == (url, 1, ["m1nd"])


def test_console_format_writes_readable_lines(tmp_path: Path) -> None:
    h = Hive(tmp_path / "state", ["--sandbox", "off", "--log-format", "console"]).start()
    try:
        wait_for(lambda: "daemon.ready" in h.log_path.read_text(), what="daemon.ready")
    finally:
        h.stop()
    assert h.proc is not None and h.proc.returncode == 0
    lines = h.log_path.read_text().splitlines()
    assert lines and not any(line.startswith("{") for line in lines)  # a file, but console was asked for
    assert "daemon.dashboard" in lines[0] and "url=" in lines[0]
    assert any("daemon.ready" in line and "agents=1" in line for line in lines)
    assert "\x1b[" not in lines[0]  # no colours into a file
