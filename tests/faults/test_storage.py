"""Storage faults (issue 16): the daemon's state dir on a small tmpfs (root
only), filled by a file of the test's own until the disk is full. Sends are
answered ``storage_unavailable`` and never acknowledged (no refused message is
in hive.sqlite), ``/metrics`` counts the failed commits, the daemon stays up,
and once the filler is deleted the next send commits.

A read-only remount cannot be tested this way: Linux refuses ``remount,ro``
(EBUSY) while any file on the filesystem is open for writing, and the daemon
always holds hive.sqlite and its -wal/-shm open. The classifier's unit tests
(tests/test_storage_faults.py) cover SQLITE_READONLY on a real read-only
connection."""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faults_common import SINK, log_problems, report
from support import Hive, fill_disk, small_tmpfs, wait_for

from hyperhive.errors import HiveError

pytestmark = [pytest.mark.faults, pytest.mark.e2e]

BODY = 32 * 1024  # characters per send: a few hundred fill the rest of the disk
MAX_SENDS = 2000  # sends before the disk must have been full
REFUSED_AFTER = 20  # sends after the first refusal, all of which must be refused or truly stored


@pytest.fixture
def small_state(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    with small_tmpfs(tmp_path / "state", "8m") as state:
        yield state


def _stored_bodies(db: Path) -> set[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {str(r[0]).split(" ", 1)[0] for r in conn.execute("SELECT body FROM messages")}
    finally:
        conn.close()


def _failures(hive: Hive) -> int:
    status, body = hive.get("/metrics")
    assert status == 200, body[-2000:]
    m = re.search(r'^hyperhive_storage_failures_total\{op="send"\} (\S+)$', body.decode(), re.M)
    return int(float(m.group(1))) if m else 0


def test_a_full_disk_refuses_sends_clearly_and_recovers(small_state: Path, browser_page: Any) -> None:
    hive = Hive(small_state).start()
    try:
        hive.spawn(SINK)
        hive.admin("stop", name=SINK)  # its messages are stored undelivered
        filler = small_state / "filler"
        fill_disk(filler)
        acked: dict[str, int] = {}
        refused: list[str] = []
        codes: set[str] = set()
        for i in range(MAX_SENDS):
            tag = f"m{i}"
            try:
                acked[tag] = hive.admin("send", to=SINK, body=f"{tag} " + "x" * BODY)["message_id"]
            except HiveError as exc:
                codes.add(exc.code)
                refused.append(tag)
                assert "disk is full" in exc.message, exc.message
            if len(refused) >= REFUSED_AFTER:
                break
        assert codes == {"storage_unavailable"}, codes
        assert len(refused) >= REFUSED_AFTER, f"the disk never filled: {len(acked)} sends acknowledged"
        assert hive.proc is not None and hive.proc.poll() is None, "the daemon went down"
        assert _failures(hive) >= 1
        code, state = hive.get_json("/api/state")
        assert code == 200 and "state" in state, state
        state = state["state"]
        assert "disk is full" in str(state["storage"]["failing"]), state["storage"]
        browser_page.goto(hive.login_url)  # the operator sees it: a banner while the store cannot be written
        banner = browser_page.locator("#storage")
        banner.wait_for(state="visible")
        assert "disk is full" in banner.inner_text() and "none is acknowledged" in banner.inner_text()

        filler.unlink()
        after = hive.admin("send", to=SINK, body="after the disk was freed")["message_id"]
        assert after > max(acked.values(), default=0)
        stored = _stored_bodies(hive.paths.db)
        assert set(acked) <= stored, "an acknowledged send is missing"
        falsely = stored & set(refused)
        assert not falsely, f"refused sends were stored: {sorted(falsely)}"
        code, state = hive.get_json("/api/state")
        assert code == 200 and "state" in state, state
        state = state["state"]
        assert state["storage"]["failing"] is None and state["storage"]["failures"]["send"] >= 1
        browser_page.reload()
        browser_page.locator("#storage").wait_for(state="hidden")
        # Other writers (the Ledger's turn records) log their own refused writes: only those may show.
        assert not [p for p in log_problems(hive.log_path) if "database or disk is full" not in p]
        report(f"storage full disk: {len(refused)} sends refused storage_unavailable, 0 acknowledged "
               f"({len(acked)} stored before the disk filled, all present), {_failures(hive)} failed commits "
               "counted, recovered")
    finally:
        hive.stop()


def test_past_the_floor_an_agents_sends_are_refused_and_the_operators_go_through(small_state: Path) -> None:
    """An agent cannot take the store's last space: under --min-free-mb free, its own sends are
    refused storage_unavailable (nothing stored) while the operator's still commit."""
    from hyperhive import client

    hive = Hive(small_state, ["--min-free-mb", "3"]).start()
    try:
        hive.spawn("writer")
        hive.spawn(SINK)
        hive.admin("stop", name=SINK)
        st = os.statvfs(small_state)
        filler = small_state / "filler"
        with open(filler, "wb") as f:  # leave about 2 MB: under the floor, room enough for commits
            f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - (2 << 20)))

        def agent_send() -> str:
            try:
                client.request(hive.socket("writer"), "send", timeout=30, to=SINK, body="agent-wrote this")
                return "acknowledged"
            except HiveError as exc:
                return f"{exc.code}: {exc.message}"

        got = wait_for(lambda: (r := agent_send()).startswith("storage_unavailable") and r,
                       timeout=10, what="the agent's send refused under the floor")
        assert "--min-free-mb" in got and "nothing stored" in got
        assert hive.admin("send", to=SINK, body="operator-wrote this")["message_id"] > 0
        bodies = _stored_bodies(hive.paths.db)
        assert "operator-wrote" in bodies and "agent-wrote" not in bodies
        filler.unlink()
        assert wait_for(lambda: agent_send() == "acknowledged" or None, timeout=10,
                        what="the agent's send once space is back")
        report("storage floor: an agent's sends refused under --min-free-mb, the operator's committed, "
               "recovered once space came back")
    finally:
        hive.stop()
