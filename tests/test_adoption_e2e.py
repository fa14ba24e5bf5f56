"""Harnesses outlive their daemon only when asked (issue 16): a clean stop
(SIGTERM) stops them and drops their records; ``--keep-agents`` and SIGUSR2
(``systemctl reload``) hand them over to the next daemon, which adopts them.
The kill -9 cases are in tests/faults/test_kill9_adoption.py."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from adoption_support import ask, events, kept_hive, pids
from support import Hive, pid_alive, wait_for

from hyperhive.backends.local_adopt import RECORD
from hyperhive.daemon import EXIT_HANDED_OVER

pytestmark = pytest.mark.e2e  # every test here starts daemons and sandboxed harnesses


@pytest.fixture
def hive(tmp_path: Path) -> Iterator[Hive]:
    yield from kept_hive(tmp_path)


def test_a_clean_stop_stops_the_harnesses_and_removes_their_records(hive: Hive) -> None:
    hive.start()
    hive.spawn("a")
    before = pids(hive)
    records = [hive.paths.agent(n) / RECORD for n in before]  # type: ignore[arg-type]
    assert all(json.loads(r.read_text())["pid"] == before[r.parent.name] for r in records)
    assert hive.proc is not None
    hive.stop()
    assert hive.proc.returncode == 0
    for pid in before.values():
        wait_for(lambda p=pid: not pid_alive(p), timeout=10, what=f"harness {pid} gone")  # type: ignore[misc]
    assert not any(r.exists() for r in records)
    hive.start()  # desired state kept: started afresh, not adopted
    assert set(pids(hive)) == set(before) and not set(pids(hive).values()) & set(before.values())


@pytest.mark.parametrize("how", ["--keep-agents", "SIGUSR2"])
def test_keep_agents_and_sigusr2_hand_the_harnesses_over(hive: Hive, how: str) -> None:
    if how == "--keep-agents":
        hive.extra_args = ["--keep-agents"]
    hive.start()
    hive.spawn("a")
    before = pids(hive)
    assert hive.proc is not None
    hive.proc.send_signal(signal.SIGUSR2 if how == "SIGUSR2" else signal.SIGTERM)
    assert hive.proc.wait(30) == (EXIT_HANDED_OVER if how == "SIGUSR2" else 0)
    assert all(pid_alive(p) for p in before.values())
    assert all((hive.paths.agent(n) / RECORD).exists() for n in before)  # type: ignore[arg-type]
    assert events(hive, "container.released")
    hive.extra_args = []
    hive.start()
    assert pids(hive) == before
    ask(hive, "a", f"handed over by {how}")
