"""Nothing taken is lost across a daemon's kill -9 (issue 16): what a turn had
taken is marked so in hive.sqlite, in the commit that delivered it. A real
daemon, real sandboxed builtin harnesses holding a `run` open, real kills (the
daemon's pid alone; the harness's process group, by its pid).

(a) the harness dies while no daemon runs: the next daemon delivers the message
    again, once, and its kick says the turn was interrupted;
(b) the harness is adopted by the next daemon, then dies: delivered again;
(c) a message delivered again once whose turn dies again across a restart is
    not delivered a third time (``inflight.gave_up``)."""

from __future__ import annotations

import os
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from adoption_support import events, kept_hive, pids
from faults_common import report
from support import Hive, pid_alive, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.e2e]  # daemons killed, sandboxed harnesses killed

HOLD = "sleep 61"  # the turn held open (a distinct command line)


@pytest.fixture
def hive(tmp_path: Path) -> Iterator[Hive]:
    yield from kept_hive(tmp_path)


def held_run(hive: Hive, holds: int) -> Path:
    """Send a.run that appends a line to ``deliveries`` each time it is delivered and
    holds its turn the first ``holds`` times; the file's path."""
    log = hive.paths.workspace("a") / "deliveries"  # type: ignore[arg-type]
    hive.admin("send", to="a", body=f"run echo x >> {log}; if [ $(wc -l < {log}) -le {holds} ]; then {HOLD}; fi; "
                                    f"echo finished")
    return log


def deliveries(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def wait_deliveries(hive: Hive, log: Path, n: int) -> None:
    wait_for(lambda: deliveries(log) == n and hive.ls()["a"].get("activity") == "thinking", timeout=60,
             what=f"delivery {n} under way")


def kill_harness(pid: int) -> None:
    """The harness's whole group (it leads a session of its own), as a kill with no daemon
    to clean up after it would leave nothing of it; the `run` child (a session of its own)
    is ended by the next start, which empties the agent's cgroup."""
    os.killpg(pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(pid), timeout=10, what="the harness gone")


def finished(hive: Hive) -> int:
    return sum(1 for m in hive.admin("inbox", limit=50)["messages"]
               if m["from"] == "a" and "] run: exit 0" in m["body"] and "finished" in m["body"])


def probe(hive: Hive) -> None:
    """A later message runs: anything still due to `a` was delivered before it (ids in order)."""
    hive.admin("send", to="a", body="run echo probed")
    wait_for(lambda: any("probed" in m["body"] for m in hive.admin("inbox", limit=50)["messages"]
                         if m["from"] == "a"), timeout=60, what="the probe's reply")


def kicks(hive: Hive) -> list[str]:
    """The kicks `a` got (read from the store: no surface shows another agent's inbox)."""
    with sqlite3.connect(f"file:{hive.paths.db}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT body FROM messages WHERE sender = 'system' AND recipient = 'a' "
                          "ORDER BY id").fetchall()
    db.close()
    return [str(r[0]) for r in rows]


def a_turn_held(hive: Hive, holds: int) -> tuple[Path, int]:
    """A daemon with agent `a` whose turn holds its message (``holds`` turns at
    most): the run's log and the harness's pid."""
    hive.start()
    hive.spawn("a")
    log = held_run(hive, holds=holds)
    wait_deliveries(hive, log, 1)
    return log, pids(hive)["a"]


def test_a_harness_dead_while_no_daemon_runs_has_its_message_delivered_again_once(hive: Hive) -> None:
    log, pid = a_turn_held(hive, holds=1)
    hive.kill9()
    kill_harness(pid)  # meanwhile: no daemon sees it go
    logged = len(hive.log_events())
    hive.start()
    wait_for(lambda: finished(hive) == 1, timeout=90, what="the message run again by the next harness")
    probe(hive)
    assert deliveries(log) == 2 and finished(hive) == 1  # delivered again exactly once
    assert hive.ls()["a"]["pid"] != pid
    assert events(hive, "inflight.redeliver", logged)
    assert any("Your last turn was interrupted: 1 message it had taken is delivered to you again" in k
               for k in kicks(hive)), kicks(hive)
    report("kill -9 of the daemon, then of its harness: the taken message delivered again once")


def test_an_adopted_harness_that_dies_has_its_message_delivered_again(hive: Hive) -> None:
    log, pid = a_turn_held(hive, holds=1)
    hive.kill9()
    hive.start()
    assert pids(hive)["a"] == pid  # adopted, its turn still held
    assert deliveries(log) == 1
    logged = len(hive.log_events())
    os.kill(pid, signal.SIGKILL)  # the daemon watches it: a crash
    wait_for(lambda: finished(hive) == 1, timeout=90, what="the message run again after the adopted one died")
    probe(hive)
    assert deliveries(log) == 2 and finished(hive) == 1
    assert events(hive, "inflight.redeliver", logged)
    assert any("Your last turn was interrupted: 1 message" in k for k in kicks(hive)), kicks(hive)


def test_a_message_delivered_again_once_is_not_delivered_a_third_time_across_a_restart(hive: Hive) -> None:
    log, first = a_turn_held(hive, holds=3)  # it would hold every turn it gets
    os.kill(first, signal.SIGKILL)  # dies on it once, the daemon up: delivered again
    wait_for(lambda: pids(hive).get("a") not in (None, first), timeout=30, what="a's restart")
    wait_deliveries(hive, log, 2)
    second = pids(hive)["a"]
    hive.kill9()
    kill_harness(second)  # dies on it again, while no daemon runs
    logged = len(hive.log_events())
    hive.start()
    wait_for(lambda: events(hive, "inflight.gave_up", logged), timeout=30, what="inflight.gave_up")
    probe(hive)
    assert deliveries(log) == 2 and finished(hive) == 0  # not a third time
    assert any("not delivered any more" in k for k in kicks(hive)), kicks(hive)
