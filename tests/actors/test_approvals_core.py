"""hyperhive.actors.approvals_core: which requests queue, the life of an
approval (pending → approving → approved/failed, or denied; first decision
wins) and what its outcome says. No actors, no store."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from hyperhive import config_repo
from hyperhive.actors.approvals_core import KICK, MAX_PROMPT, ApprovalRecord, ApprovalsCore
from hyperhive.errors import BadName, BadRequest, Conflict, HiveError, UnknownAgent, UnknownId
from hyperhive.names import AgentName
from hyperhive.paths import AgentConfig

NOW = 1_800_000_000.0
PROMPT, CONFIG = config_repo.PROMPT_FILE, config_repo.CONFIG_FILE


def rec(id: int = 7, **kw: Any) -> ApprovalRecord:  # noqa: A002 - the row's own name
    return ApprovalRecord(**{"id": id, "kind": "spawn", "agent": "alice", "requested_by": "m1nd",
                             "requested_at": NOW - 60, **kw})


# --- requests -----------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "facts", "prompt", "error", "match"), [
    ("alice", {}, None, None, None),
    ("alice", {}, "x" * MAX_PROMPT, None, None),
    ("alice", {}, "x" * (MAX_PROMPT + 1), BadRequest, "prompt is over"),
    ("alice", {"live": True}, None, Conflict, "already exists"),
    ("alice", {"kept": True}, None, Conflict, "kept state; revive it"),
    ("alice", {"waiting": 3}, None, Conflict, r"already waits for approval \(#3\)"),
    ("alice", {"live": True, "kept": True, "waiting": 3}, None, Conflict, "already exists"),  # live says it first
    ("system", {}, None, BadName, "reserved"),
    ("Bad Name", {}, None, BadName, "bad agent name"),
])
def test_spawn_request(name: str, facts: dict[str, Any], prompt: str | None, error: type[HiveError] | None,
                       match: str | None) -> None:
    args = {"live": False, "kept": False, "waiting": None, **facts}
    if error is not None:
        with pytest.raises(error, match=match):
            ApprovalsCore.spawn("m1nd", name, None, prompt, now=NOW, **args)
        return
    new = ApprovalsCore.spawn("m1nd", name, AgentConfig(driver="claude"), prompt, now=NOW, **args)
    assert (new.kind, new.agent, new.requested_by, new.requested_at, new.prompt) == ("spawn", name, "m1nd", NOW, prompt)
    assert json.loads(new.config or "") == {"driver": "claude"} and new.reason is None


def test_a_spawn_without_config_queues_the_empty_one() -> None:
    new = ApprovalsCore.spawn("operator", "bob", None, None, live=False, kept=False, waiting=None, now=NOW)
    assert new.config == AgentConfig().to_json()
    assert "status" not in new.fields()  # the store's default says pending
    assert set(new.fields()) >= {"kind", "agent", "requested_by", "requested_at", "config", "prompt"}


@pytest.mark.parametrize(("name", "live", "kept_dir", "error", "match"), [
    ("alice", False, True, None, None),
    ("alice", True, True, Conflict, "is live; nothing to revive"),
    ("alice", False, False, UnknownAgent, "no kept state"),
    ("operator", False, True, BadName, "reserved"),
])
def test_check_revive(name: str, live: bool, kept_dir: bool, error: type[HiveError] | None, match: str | None) -> None:
    if error is None:
        assert ApprovalsCore.check_revive(name, live=live, kept_dir=kept_dir) == name
    else:
        with pytest.raises(error, match=match):
            ApprovalsCore.check_revive(name, live=live, kept_dir=kept_dir)


@pytest.mark.parametrize(("kept", "waiting", "config"), [
    (AgentConfig(allowed_recipients=("m1nd",)), None, {"allowed_recipients": ["m1nd"]}),
    (None, None, {}),
    (None, 4, None),  # a spawn of it already waits
])
def test_revive_keeps_the_config_and_says_revive(kept: AgentConfig | None, waiting: int | None,
                                                  config: dict[str, Any] | None) -> None:
    if config is None:
        with pytest.raises(Conflict, match="#4"):
            ApprovalsCore.revive("operator", AgentName("alice"), kept, waiting=waiting, now=NOW)
        return
    new = ApprovalsCore.revive("operator", AgentName("alice"), kept, waiting=waiting, now=NOW)
    assert (new.kind, new.reason, json.loads(new.config or "")) == ("spawn", "revive", config)


@pytest.mark.parametrize(("live", "error"), [(True, None), (False, UnknownAgent)])
def test_a_config_change_needs_the_agent(live: bool, error: type[HiveError] | None) -> None:
    if error is None:
        assert ApprovalsCore.check_agent("alice", live=live) == "alice"
    else:
        with pytest.raises(error, match="no agent named alice"):
            ApprovalsCore.check_agent("alice", live=live)


@pytest.mark.parametrize(("prompt", "agent_json", "files", "error"), [
    ("hi", None, {PROMPT: "hi"}, None),
    (None, '{"driver": "claude"}', {CONFIG: AgentConfig(driver="claude").to_json()}, None),
    ("p", "{}", {PROMPT: "p", CONFIG: AgentConfig().to_json()}, None),
    (None, None, {}, None),
    ("x" * (MAX_PROMPT + 1), None, None, BadRequest),
    (None, '{"nope": 1}', None, BadRequest),  # unknown keys are refused
    (None, "not json", None, BadRequest),
])
def test_config_files(prompt: str | None, agent_json: str | None, files: dict[str, str] | None,
                      error: type[HiveError] | None) -> None:
    if error is not None:
        with pytest.raises(error):
            ApprovalsCore.config_files(prompt, agent_json)
    else:
        assert ApprovalsCore.config_files(prompt, agent_json) == files


@pytest.mark.parametrize(("new", "error", "match"), [
    ({PROMPT: "new prompt"}, None, None),
    ({CONFIG: '{"driver": "builtin"}\n', PROMPT: "p"}, None, None),
    ({"README": "x"}, BadRequest, "neither agent.json nor"),
    ({CONFIG: '{"bad": true}'}, BadRequest, None),
])
def test_apply_commit_request(new: dict[str, str], error: type[HiveError] | None, match: str | None) -> None:
    full = "ab" * 20
    if error is not None:
        with pytest.raises(error, match=match):
            ApprovalsCore.apply_commit("m1nd", AgentName("alice"), full, new, {}, now=NOW)
        return
    got = ApprovalsCore.apply_commit("m1nd", AgentName("alice"), full, new, {PROMPT: "old prompt"}, now=NOW)
    assert (got.kind, got.commit, got.requested_at) == ("apply_commit", full, NOW)
    assert json.loads(got.files_json or "") == new  # what was shown is what will be applied
    assert got.diff_html == config_repo.diff_html({PROMPT: "old prompt"}, new)


@pytest.mark.parametrize(("files_json", "error", "match"), [
    (json.dumps({PROMPT: "p"}), None, None),
    (None, BadRequest, r"older hyperhive .*\(request_apply_commit alice abababababab\)"),
    (json.dumps(["not", "a", "map"]), BadRequest, "not a map"),
    (json.dumps({"../escape": "x"}), BadRequest, None),
])
def test_kept_files(files_json: str | None, error: type[HiveError] | None, match: str | None) -> None:
    a = rec(kind="apply_commit", commit="ab" * 20, files_json=files_json)
    if error is None:
        assert a.kept_files() == {PROMPT: "p"}
    else:
        with pytest.raises(error, match=match):
            a.kept_files()


# --- the state machine ------------------------------------------------------------------------
@pytest.mark.parametrize(("row", "busy", "error", "match"), [
    (rec(), False, None, None),
    (None, False, UnknownId, "no approval #7"),
    (rec(status="approved"), False, Conflict, "already approved"),
    (rec(status="denied"), False, Conflict, "already denied"),
    (rec(status="failed"), False, Conflict, "already failed"),
    (rec(), True, Conflict, "already being applied"),
])
def test_begin_takes_only_a_pending_idle_approval(row: ApprovalRecord | None, busy: bool,
                                                  error: type[HiveError] | None, match: str | None) -> None:
    core = ApprovalsCore({7} if busy else set())
    if error is None:
        assert core.begin(row, 7) == row and core.busy == {7}
        return
    with pytest.raises(error, match=match):
        core.begin(row, 7)
    assert core.busy == ({7} if busy else set())  # a refused decision changes nothing
    with pytest.raises(error, match=match):
        core.pending(row, 7)  # deny refuses the same ones


@pytest.mark.parametrize(("error", "outcome", "reason"), [
    (None, "approved", None),
    (Conflict("agent alice already exists"), "failed", "agent alice already exists"),
    (RuntimeError("backend broke"), "failed", "backend broke"),
])
def test_finished_ends_the_approving_state(error: BaseException | None, outcome: str, reason: str | None) -> None:
    core = ApprovalsCore()
    core.begin(rec(), 7)
    assert core.view(rec())["status"] == "applying"
    assert core.finished(7, error) == (outcome, reason)
    assert core.busy == set() and core.view(rec())["status"] == "pending"


def test_broke_names_the_error_and_frees_the_approval() -> None:
    core = ApprovalsCore()
    core.begin(rec(), 7)
    assert core.broke(7, BadRequest("no files")) == ("failed", "BadRequest: no files")
    assert core.busy == set()


@pytest.mark.parametrize(("a", "outcome", "reason"), [
    (rec(), "approved", None),
    (rec(), "denied", "not now"),
    (rec(kind="apply_commit", commit="c0ffee" * 6, config=None), "failed", "BadRequest: gone"),
])
def test_decide_gives_the_row_the_managers_message_and_the_view(a: ApprovalRecord, outcome: Any,
                                                                 reason: str | None) -> None:
    d = ApprovalsCore.decide(a, outcome, reason, NOW)
    assert d.record == replace(a, status=outcome, decided_at=NOW, reason=reason)
    assert d.message == {"event": "ApprovalResolved", "id": 7, "kind": a.kind, "agent": "alice",
                         "commit": a.commit, "outcome": outcome, "reason": reason}
    assert d.view == d.record.view()
    assert (d.view["status"], d.view["decided_at"], d.view["reason"]) == (outcome, NOW, reason)


def test_view_and_listing() -> None:
    a = rec(config='{"driver": "claude"}', prompt="hi")
    assert a.view() == {
        "id": 7, "kind": "spawn", "agent": "alice", "requested_by": "m1nd", "requested_at": NOW - 60,
        "config": {"driver": "claude"}, "prompt": "hi", "commit": None, "diff_html": None, "status": "pending",
        "decided_at": None, "reason": None,
    }
    assert rec(config="").view()["config"] is None
    core = ApprovalsCore({7})
    done = rec(8, status="approved")
    listing = core.listing([a], [done])
    assert [v["status"] for v in listing["pending"]] == ["applying"]
    assert listing["decided"] == [done.view()]


def test_spawn_config_and_kick() -> None:
    assert ApprovalsCore.spawn_config(rec(config=None)) == AgentConfig()
    assert ApprovalsCore.spawn_config(rec(config='{"driver": "claude"}')).driver == "claude"
    with pytest.raises(BadRequest):
        ApprovalsCore.spawn_config(rec(config='{"x": 1}'))
    assert "approval" in KICK


def test_record_of_reads_a_rows_attributes() -> None:
    class Row:
        id, kind, agent, requested_by, requested_at = 3, "spawn", "bob", "operator", NOW
        config = prompt = commit = diff_html = files_json = decided_at = reason = None
        status = "pending"

    assert ApprovalRecord.of(Row()) == ApprovalRecord(id=3, kind="spawn", agent="bob", requested_by="operator",
                                                      requested_at=NOW)
