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
