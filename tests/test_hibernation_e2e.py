"""Hibernation through a real daemon (issue 17, build 2): an idle agent's
harness is stopped and it shows hibernating, its desired state kept; the first
message starts it again and is answered; an operator's stop is not undone by
mail; agent.json's ``hibernate_after_seconds`` overrides the daemon's."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import Hive, wait_for

from hyperhive.client import AsyncClient
from hyperhive.events_probe import read_history

pytestmark = pytest.mark.e2e  # every test here starts a daemon

AFTER = "1"


@pytest.fixture
def hive(tmp_path: Path) -> Iterator[Hive]:
    h = Hive(tmp_path / "state", extra_args=["--hibernate-after-seconds", AFTER]).start()
    try:
        yield h
    finally:
        h.stop()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")


def desired(hive: Hive, name: str) -> str:
    with sqlite3.connect(hive.paths.db) as conn:
        (d,) = conn.execute("SELECT desired FROM containers WHERE name = ?", (name,)).fetchone()
    conn.close()
    return str(d)


def replies(hive: Hive, name: str, text: str) -> list[dict[str, Any]]:
    return [m for m in hive.admin("inbox", limit=200)["messages"] if m["from"] == name and text in m["body"]]


def hibernating(hive: Hive, name: str) -> dict[str, Any]:
    return wait_for(lambda: (c := hive.ls()[name])["state"] == "hibernating" and c, timeout=30,
                    what=f"{name} hibernating")


def test_an_idle_agent_hibernates_and_a_message_wakes_it(hive: Hive) -> None:
    first = hive.admin("spawn", name="alice")["container"]
    pid = wait_for(lambda: hive.ls()["alice"]["pid"] or first["pid"], timeout=30, what="alice's harness")
    snap = hibernating(hive, "alice")
    assert snap["pid"] is None and snap["transient"] is None and desired(hive, "alice") == "running"
    wait_for(lambda: not alive(pid), timeout=10, what="the harness gone")
    out = subprocess.run([sys.executable, "-m", "hyperhive", "--state-dir", str(hive.state_dir), "ls"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert any(line.split()[:3][0] == "alice" and "hibernating" in line for line in out.splitlines()), out
    for n in (1, 2):  # each message wakes it; it answers, then sleeps again
        hive.admin("send", to="alice", body=f"wake up {n}")
        wait_for(lambda n=n: replies(hive, "alice", f"wake up {n}"), timeout=30, what=f"alice's reply {n}")
        hibernating(hive, "alice")
    assert hive.ls()["alice"]["restarts"] == 0  # a wake is no crash
    assert not any(m["from"] == "system" and "alice" in m["body"] and "ContainerCrash" in m["body"]
                   for m in hive.admin("inbox", limit=200)["messages"])


def test_an_operator_stop_is_kept_and_a_start_wakes_it(hive: Hive) -> None:
    hive.admin("spawn", name="alice")
    hibernating(hive, "alice")
    hive.admin("stop", name="alice")
    assert hive.ls()["alice"]["state"] == "stopped" and desired(hive, "alice") == "stopped"
    hive.admin("send", to="alice", body="while stopped")
    hive.admin("send", to="m1nd", body="to compare")  # m1nd hibernates too: this wakes it
    wait_for(lambda: replies(hive, "m1nd", "to compare"), timeout=30, what="m1nd woken")
    assert hive.ls()["alice"]["state"] == "stopped" and hive.ls()["alice"]["undelivered"] == 1
    hive.admin("start", name="alice")
    wait_for(lambda: replies(hive, "alice", "while stopped"), timeout=30, what="the message kept for it")


async def manager_request(hive: Hive, op: str, **fields: Any) -> dict[str, Any]:
    c = AsyncClient(hive.socket("m1nd"))  # as m1nd's tools make them; no message: m1nd sleeps on
    try:
        return await c.request(op, **fields)
    finally:
        await c.close()


async def test_agent_json_says_never(hive: Hive) -> None:
    hive.admin("spawn", name="bob")
    hibernating(hive, "bob")
    approval = await manager_request(hive, "propose_config", agent="bob", message="stay up",
                                     agent_json=json.dumps({"hibernate_after_seconds": 0}))
    hive.admin("approve", approval_id=approval["approval_id"])
    wait_for(lambda: hive.ls()["bob"]["state"] == "running" and hive.ls()["bob"]["parked"]["system"] >= 1,
             timeout=60, what="bob rebuilt")
    for name in ("bob", "m1nd"):
        hive.admin("send", to=name, body="a turn")
    for name in ("bob", "m1nd"):
        wait_for(lambda name=name: replies(hive, name, "a turn"), timeout=30, what=f"{name}'s turn")
    turned = time.monotonic()
    hibernating(hive, "m1nd")  # the daemon's setting still holds for the others
    # "Never" can only be watched: three times the daemon's setting after its turn, bob is up.
    wait_for(lambda: time.monotonic() - turned > 3 * float(AFTER), timeout=30, what="three periods")
    assert hive.ls()["bob"]["state"] == "running" and hive.ls()["bob"]["restarts"] == 0


def ui(hive: Hive, name: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    port = int((hive.paths.agent(name) / "port").read_text())  # type: ignore[arg-type]
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST" if body else "GET",
                                 headers={"Content-Type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_its_web_ui_answers_while_it_hibernates_and_a_note_wakes_it(hive: Hive) -> None:
    hive.admin("spawn", name="alice")
    hive.admin("send", to="alice", body="remember me")
    wait_for(lambda: replies(hive, "alice", "remember me"), timeout=30, what="a turn")
    hibernating(hive, "alice")
    status, page = ui(hive, "alice", "/")
    assert status == 200 and b"/static/agent.js" in page
    assert ui(hive, "alice", "/static/agent.js")[0] == 200
    status, raw = ui(hive, "alice", "/api/state")
    st = json.loads(raw)
    assert status == 200 and st["state"] == "hibernating" and st["name"] == "alice"
    assert any("remember me" in m["body"] for m in st["inbox"])
    status, raw = ui(hive, "alice", "/events/history")
    kinds = [e["kind"] for e in json.loads(raw)["events"]]
    assert status == 200 and "turn_start" in kinds and "turn_end" in kinds  # from its events db
    assert ui(hive, "alice", "/compact", b"{}")[0] == 409
    assert json.loads(ui(hive, "alice", "/cancel", b"{}")[1])["cancelled"] is False
    assert hive.ls()["alice"]["state"] == "hibernating"  # reading it wakes nothing
    status, raw = ui(hive, "alice", "/send", b'{"body": "a note"}')
    assert status == 503 and json.loads(raw)["error"]["code"] == "waking"
    wait_for(lambda: hive.ls()["alice"]["state"] == "running", timeout=30, what="woken by the note")
    wait_for(lambda: ui(hive, "alice", "/api/state")[0] == 200
             and json.loads(ui(hive, "alice", "/api/state")[1]).get("state") != "hibernating",
             timeout=30, what="its harness answering again")


def test_a_hostile_events_db_shows_nothing_of_it_and_nothing_else(hive: Hive) -> None:
    hive.admin("spawn", name="alice")
    hibernating(hive, "alice")
    db = hive.paths.state("alice") / "hyperhive-events.sqlite"  # type: ignore[arg-type]
    for f in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        f.unlink(missing_ok=True)
    conn = sqlite3.connect(db)  # what the agent could write there: bad rows among good ones
    conn.execute("CREATE TABLE events (id, ts, kind, data)")
    conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?)", [
        (1, 1.0, "ok", json.dumps({"a": 1})), ("two", 2.0, "bad id", "{}"), (3, "x", "bad ts", "{}"),
        (4, 4.0, "k" * 1000, "{}"), (5, 5.0, "not json", "{"), (6, 6.0, "a list", "[1]"),
        (7, 7.0, "deep", "[" * 100 + "]" * 100), (8, 8.0, "surrogate", '{"s": "\\ud800"}'),
        (9, 9.0, "fine", json.dumps({"b": "ok"}))])
    conn.commit()
    conn.close()
    os.chown(db, *(lambda s: (s.st_uid, s.st_gid))(db.parent.stat()))
    status, raw = ui(hive, "alice", "/events/history")
    assert status == 200 and [e["kind"] for e in json.loads(raw)["events"]] == ["ok", "fine"]
    # A link to the daemon's own store: not in the reader's view (its sandbox has only the state dir).
    for f in (db, Path(f"{db}-wal")):
        f.unlink(missing_ok=True)
    db.symlink_to(hive.paths.db)
    assert read_history(db.parent) == []  # the reader the page's history comes from, afresh
    db.unlink()
    db.symlink_to("/proc/self/environ")
    assert read_history(db.parent) == []
