"""The dashboard's pure parts: views, push routing, the spawn form's config,
and the access rules (F32–F37, F46), without a server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hyperhive.actors.snapshots import ContainerSnapshot
from hyperhive.errors import BadName, BadRequest, BadTokenFile
from hyperhive.tombstones import Tombstone
from hyperhive.web.dashboard.access import is_loopback, load_token
from hyperhive.web.dashboard.actions import spawn_request_config
from hyperhive.web.dashboard.push import sections_for
from hyperhive.web.dashboard.state import merge_snapshots
from hyperhive.web.dashboard.views import (
    build_approval_views,
    build_container_views,
    build_flow_views,
    build_inbox_views,
    build_question_views,
    build_tombstone_views,
    container_row,
    human_age,
    human_size,
    memory_text,
    pids_text,
    pill_text,
    short_size,
)
from hyperhive.wire import InboxRow

NOW = 1_000_000.0


def snap(name: str, state: str = "running", transient: str | None = None, **kw: object) -> ContainerSnapshot:
    return ContainerSnapshot.from_wire({
        "name": name, "role": "manager" if name == "m1nd" else "agent", "state": state,
        "transient": transient, "pid": 42 if state == "running" else None, "driver": "builtin",
        "restarts": 0, "last_exit": None, "started_at": NOW - 125 if state == "running" else None, **kw})


def test_containers_manager_first_then_by_name_with_figures() -> None:
    stats = {"parked": {"bob": {"tool": 1, "system": 1}}, "undelivered": {"alice": 3}}
    rows = build_container_views(
        [snap("bob"), snap("m1nd"), snap("alice", "stopped")], stats,
        {"bob": ["needs-update"]}, {"bob": 8123, "alice": 8124, "m1nd": None}, NOW)
    assert [r["name"] for r in rows] == ["m1nd", "alice", "bob"]
    m1nd, alice, bob = rows
    assert m1nd["role"] == "manager" and bob["role"] == "agent"
    assert bob["badges"] == ["needs-update"] and alice["badges"] == []
    assert bob["port"] == 8123
    assert alice["port"] is None  # no link to a web UI that is not running
    assert alice["undelivered"] == 3 and bob["parked"] == {"tool": 1, "system": 1}
    assert bob["uptime"] == "2m" and alice["uptime"] is None
    assert alice["pill"] == "○ stopped" and not alice["busy"]


@pytest.mark.parametrize(("state", "transient", "text"), [
    ("running", "restarting", "◐ restarting…"),
    ("stopped", "starting", "◐ starting…"),
    ("running", None, "● running"),
    ("crashed", None, "✖ crashed"),
])
def test_pill(state: str, transient: str | None, text: str) -> None:
    assert pill_text(state, transient) == text


def test_activity_per_row() -> None:
    rows = build_container_views([snap("alice"), snap("bob", "stopped")], {}, {}, {}, NOW,
                                 {"alice": "thinking", "bob": None})
    assert [r["activity"] for r in rows] == ["thinking", None]
    assert build_container_views([snap("alice")], {}, {}, {}, NOW)[0]["activity"] is None


def test_busy_row_while_a_verb_runs() -> None:
    (row,) = build_container_views([snap("alice", transient="rebuilding")], {}, {}, {}, NOW)
    assert row["busy"] and row["pill"] == "◐ rebuilding…"


@pytest.mark.parametrize(("n", "text"), [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"),
                                         (5 * 1024**2, "5.0 MiB"), (3 * 1024**4, "3072.0 GiB")])
def test_human_size(n: int, text: str) -> None:
    assert human_size(n) == text


@pytest.mark.parametrize(("n", "text"), [(0, "0B"), (-5, "0B"), (1023, "1023B"), (1024, "1.0K"), (1536, "1.5K"),
                                         (10 * 1024, "10K"), (112 * 1024**2, "112M"), (int(9.96 * 1024**2), "10M"),
                                         (int(1.5 * 1024**3), "1.5G"), (3 * 1024**4, "3.0T"),
                                         (2048 * 1024**4, "2048T")])
def test_short_size(n: int, text: str) -> None:
    assert short_size(n) == text


MiB = 1024**2


@pytest.mark.parametrize(("usage", "memory", "procs"), [
    (None, None, None),
    ({}, None, None),
    ({"memory_bytes": None, "memory_peak_bytes": None, "pids": None}, None, None),
    ({"memory_bytes": 112 * MiB, "memory_peak_bytes": 180 * MiB, "pids": 7}, "112M/180M", "7 pids"),
    ({"memory_bytes": 112 * MiB, "memory_peak_bytes": None, "pids": 1}, "112M", "1 pid"),  # no memory.peak (old v2)
    ({"memory_bytes": None, "memory_peak_bytes": 180 * MiB, "pids": 0}, "?/180M", "0 pids"),
    ({"memory_bytes": 512, "memory_peak_bytes": 2 * 1024**3}, "512B/2.0G", None),
])
def test_usage_texts(usage: dict[str, int | None] | None, memory: str | None, procs: str | None) -> None:
    assert memory_text(usage) == memory
    assert pids_text(usage) == procs


def test_row_usage_and_link_only_while_running() -> None:
    usage = {"memory_bytes": 112 * MiB, "memory_peak_bytes": 180 * MiB, "pids": 7}
    up = container_row(snap("bob", sandboxed=True), {}, [], 8123, NOW, usage=usage)
    assert (up["memory"], up["pids"], up["port"], up["sandboxed"]) == ("112M/180M", "7 pids", 8123, True)
    down = container_row(snap("bob", "stopped", sandboxed=False), {}, ["unsandboxed"], 8123, NOW, usage=usage)
    assert (down["memory"], down["pids"], down["port"]) == (None, None, None)  # a stopped agent shows none
    assert down["badges"] == ["unsandboxed"] and down["sandboxed"] is False
    (r,) = build_container_views([snap("bob")], {}, {}, {"bob": 1}, NOW, usage={"bob": usage})
    assert r["memory"] == "112M/180M"
    (r,) = build_container_views([snap("bob")], {}, {}, {}, NOW)
    assert r["memory"] is None and r["pids"] is None


@pytest.mark.parametrize(("s", "text"), [(-3, "0s"), (59, "59s"), (61, "1m"), (3700, "1h 1m"), (90000, "1d 1h")])
def test_human_age(s: float, text: str) -> None:
    assert human_age(s) == text


def test_tombstones() -> None:
    (t,) = build_tombstone_views([Tombstone("old", 2048, NOW - 90, 90.0, True)])  # type: ignore[arg-type]
    assert t["name"] == "old" and t["size"] == "2.0 KiB" and t["age"] == "1m" and t["credentials_kept"]


def test_questions_input_kind_and_chip() -> None:
    listing: dict[str, Any] = {
        "pending": [
            {"id": 1, "asker": "m1nd", "question": "one?", "options": ["a", "b"], "multi": False,
             "asked_at": NOW, "deadline_at": NOW + 185, "default": None},
            {"id": 2, "asker": "m1nd", "question": "many?", "options": ["a", "b"], "multi": True,
             "asked_at": NOW, "deadline_at": None, "default": None},
        ],
        "resolved": [{"id": 0, "asker": "m1nd", "question": "old", "answer": "[cancelled]", "how": "cancelled",
                      "answered_at": NOW}],
    }
    v = build_question_views(listing, NOW)
    one, many = v["pending"]
    assert one["input"] == "radio" and one["chip"] == "⏳ 3m 5s"
    assert many["input"] == "checkbox" and many["chip"] is None
    assert v["resolved"][0]["answer"] == "[cancelled]"


def test_approvals_titles_and_diff() -> None:
    listing: dict[str, Any] = {"pending": [
        {"id": 1, "kind": "spawn", "agent": "carol", "requested_by": "operator", "config": {"driver": "builtin"},
         "prompt": "hi", "commit": None, "diff_html": None, "status": "pending"},
        {"id": 2, "kind": "apply_commit", "agent": "bob", "requested_by": "m1nd", "config": None, "prompt": None,
         "commit": "0123456789abcdef", "diff_html": '<pre class="diff">x</pre>', "status": "applying"},
    ], "decided": []}
    spawn, apply = build_approval_views(listing)["pending"]
    assert spawn["title"] == "spawn carol" and spawn["config"] == {"driver": "builtin"}
    assert apply["title"] == "apply 0123456789ab to bob" and apply["diff_html"].startswith("<pre")
    assert apply["status"] == "applying"


def row(i: int, frm: str = "alice", to: str = "operator", body: str = "hi", delivered: bool = False) -> InboxRow:
    return InboxRow(i, frm, to, body, NOW + i, NOW + i if delivered else None)


def test_inbox_newest_first_with_unread_count() -> None:
    v = build_inbox_views([row(1, delivered=True), row(3), row(2)])
    assert [m["id"] for m in v["messages"]] == [3, 2, 1]
    assert v["unread"] == 2 and v["messages"][2]["unread"] is False


def test_flow_dedupes_limits_and_trims_long_bodies() -> None:
    rows = [row(i, "a", "b") for i in range(1, 80)] + [row(5, "a", "b"), row(80, "a", "b", "x" * 1000)]
    v = build_flow_views(rows, limit=10)
    assert [m["id"] for m in v] == list(range(80, 70, -1))
    assert len(v[0]["body"]) == 280 and v[0]["body"].endswith("…")


@pytest.mark.parametrize(("event", "payload", "sections"), [
    ("message.sent", {"to": "operator"}, ("flow", "inbox")),
    ("message.sent", {"to": "alice"}, ("flow",)),
    ("question.asked", {}, ("questions",)),
    ("approval.resolved", {}, ("approvals", "tombstones")),
    ("container.removed", {}, ("containers", "tombstones")),
    ("container.state", {}, ()),  # pushed as a single row
])
def test_sections_for(event: str, payload: dict[str, object], sections: tuple[str, ...]) -> None:
    assert sections_for(event, payload) == sections


def test_spawn_form_config() -> None:
    cfg = spawn_request_config("builtin", " alice, operator ,")
    assert cfg.driver == "builtin" and cfg.allowed_recipients == ("alice", "operator")
    assert spawn_request_config("", "").to_json().strip() == "{}"
    with pytest.raises(BadRequest, match="driver"):
        spawn_request_config("gpt", "")
    with pytest.raises(BadName):
        spawn_request_config("", "alice, ../x")


@pytest.mark.parametrize(("host", "loop"), [("127.0.0.1", True), ("127.3.4.5", True), ("::1", True),
                                            ("localhost", True), ("0.0.0.0", False), ("::", False),
                                            ("10.1.2.3", False)])
def test_is_loopback(host: str, loop: bool) -> None:
    assert is_loopback(host) is loop


def test_load_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HYPERHIVE_TOKEN_FILE", raising=False)
    assert load_token("127.0.0.1", "") is None
    with pytest.raises(BadTokenFile, match="not loopback"):
        load_token("0.0.0.0", "")
    with pytest.raises(BadTokenFile, match="cannot read"):
        load_token("0.0.0.0", str(tmp_path / "missing"))
    short = tmp_path / "short"
    short.write_text("abc\n")
    with pytest.raises(BadTokenFile, match="shorter"):
        load_token("0.0.0.0", str(short))
    good = tmp_path / "token"
    good.write_text("s3cret-operator-token\n")
    assert load_token("0.0.0.0", str(good)) == "s3cret-operator-token"
    assert load_token("127.0.0.1", str(good), tmp_path / "run") == "s3cret-operator-token"  # a given file wins
    assert not (tmp_path / "run").exists()


def test_own_token_is_made_once_private_and_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HYPERHIVE_TOKEN_FILE", raising=False)
    run = tmp_path / "run"
    first = load_token("127.0.0.1", "", run)
    f = run / "operator.token"
    assert first is not None and len(first) >= 43 and f.read_text().strip() == first
    assert f.stat().st_mode & 0o777 == 0o600
    assert load_token("127.0.0.1", "", run) == first  # kept across starts
    f.chmod(0o644)
    assert load_token("127.0.0.1", "", run) == first and f.stat().st_mode & 0o777 == 0o600  # tightened
    f.unlink()  # rotation: delete it, restart
    assert load_token("127.0.0.1", "", run) not in (None, first)


def test_mirror_takes_events_newer_than_the_ls_answer() -> None:
    answer = [snap("alice", transient="spawning"), snap("bob"), snap("carol")]
    latest = {
        "alice": (7, snap("alice")),  # arrived after we asked (asked at 5): newer
        "bob": (3, snap("bob", "stopped")),  # before we asked: the answer has it already
        "gone": (9, snap("gone")),  # not in the answer: destroyed, stays out
    }
    mirror = merge_snapshots(answer, latest, asked=5)
    assert set(mirror) == {"alice", "bob", "carol"}
    assert mirror["alice"].transient is None
    assert mirror["bob"].state == "running" and mirror["carol"] is answer[2]
