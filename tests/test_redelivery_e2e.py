"""Nothing taken is lost (issue 16, Build 2): the messages a harness's turn had
taken are delivered again when the harness dies before the turn finished, and
the next harness's turn runs them. A real daemon, a real builtin harness in its
sandbox, killed with SIGKILL in the middle of a `run`."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from support import Hive, wait_for

pytestmark = pytest.mark.e2e


def test_a_turn_killed_midway_has_its_message_delivered_again(tmp_path: Path) -> None:
    hive = Hive(tmp_path / "state").start()
    try:
        hive.spawn("a")
        work = hive.paths.workspace("a")  # type: ignore[arg-type]
        # First time: mark the start and hold the turn; the second time (redelivered): answer at once.
        cmd = ("run if [ -e started ]; then echo second-time; else touch started; sleep 120; fi")
        hive.admin("send", to="a", body=cmd)
        wait_for(lambda: (work / "started").exists() or None, timeout=30, what="the turn under way")
        before = hive.ls()["a"]
        assert before["undelivered"] == 0  # taken by the turn
        os.kill(before["pid"], signal.SIGKILL)  # the harness dies in the middle of its turn
        reply = wait_for(lambda: next((m["body"] for m in hive.admin("inbox", limit=50)["messages"]
                                       if m["from"] == "a" and "second-time" in m["body"]), None),
                         timeout=90, what="the message run again by the next harness")
        assert "] run: exit 0" in reply
        after = hive.ls()["a"]
        assert after["restarts"] == before["restarts"] + 1 and after["pid"] != before["pid"]
        assert any(e.get("event") == "inflight.redeliver" and e.get("agent") == "a" for e in hive.log_events())
    finally:
        hive.stop()
