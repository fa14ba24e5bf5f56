"""F42: the Notifier runs a real notify command (a script in tmp_path that
keeps what it reads) for the events that wait for the operator."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest
from structlog.testing import capture_logs
from support import wait_for

from hyperhive.actors.events import (
    ApprovalQueued,
    ApprovalResolved,
    BudgetWarning,
    ContainerCrash,
    ContainerKilled,
    Hub,
    MessageSent,
    QuestionAsked,
    QuestionResolved,
)
from hyperhive.actors.notifier import NOTIFY_EVENTS, Notifier, notification


def script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


@pytest.fixture
def hub() -> Iterator[Hub]:
    yield Hub()
    pykka.ActorRegistry.stop_all()


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_the_command_reads_each_operator_event_as_one_json_object(tmp_path: Path, hub: Hub) -> None:
    got = tmp_path / "got.jsonl"
    cmd = script(tmp_path, "notify.sh", f'cat >> "{got}"\n')
    Notifier.start(f"{cmd} --flag", hub)
    question = {"id": 1, "asker": "m1nd", "question": "ship it?", "options": ["yes", "no"]}
    approval = {"id": 2, "kind": "spawn", "agent": "alice", "status": "pending"}
    before = time.time()
    hub.publish(QuestionAsked(question))
    hub.publish(MessageSent({"id": 5, "to": "operator"}))  # not for the operator's attention
    hub.publish(ApprovalQueued(approval))
    hub.publish(QuestionResolved({"id": 1, "how": "answered"}, "m1nd"))
    hub.publish(ApprovalResolved({"id": 2, "status": "approved"}))
    hub.publish(ContainerKilled("alice", "operator", True))
    hub.publish(ContainerCrash("alice", "exit 1", "crashed", 1.0))
    hub.publish(BudgetWarning("alice", 4.0, 5.0, "day"))  # 80 % of a budget (issue 15)
    wait_for(lambda: len(lines(got)) == 4, what="four notifications")
    out = lines(got)
    assert [(n["event"], n["payload"]) for n in out] == [
        ("question.asked", question),
        ("approval.queued", approval),
        ("container.crash", {"event": "ContainerCrash", "agent": "alice", "exit": "exit 1", "reason": "crashed",
                             "restart_in_seconds": 1.0}),
        ("budget.warning", {"event": "BudgetWarning", "agent": "alice", "spent_usd": 4.0, "budget_usd": 5.0,
                            "per": "day"}),
    ]
    assert all(before <= n["at"] <= time.time() for n in out)


def test_a_failing_command_is_logged_and_the_next_event_still_runs(tmp_path: Path, hub: Hub) -> None:
    got = tmp_path / "got.jsonl"
    cmd = script(tmp_path, "flaky.sh", f'read line\ncase "$line" in *approval*) echo nope >&2; exit 3;; esac\n'
                                       f'echo "$line" >> "{got}"\n')
    with capture_logs() as logs:
        Notifier.start(str(cmd), hub)
        hub.publish(ApprovalQueued({"id": 1}))
        hub.publish(QuestionAsked({"id": 2}))
        wait_for(lambda: lines(got), what="the question's notification")
    failed = [e for e in logs if e["event"] == "notify.failed"]
    assert [(e["notify_event"], e["returncode"], e["stderr"].strip()) for e in failed] == [
        ("approval.queued", 3, "nope")]
    assert [n["payload"] for n in lines(got)] == [{"id": 2}]


def test_a_missing_command_is_logged(tmp_path: Path, hub: Hub) -> None:
    with capture_logs() as logs:
        ref = Notifier.start(str(tmp_path / "absent"), hub)
        hub.publish(QuestionAsked({"id": 1}))
        wait_for(lambda: any(e["event"] == "notify.failed" for e in logs), what="notify.failed")
    assert ref.is_alive()


def test_the_events_and_their_shape() -> None:
    assert (QuestionAsked, ApprovalQueued, ContainerCrash, BudgetWarning) == NOTIFY_EVENTS
    assert {e.name for e in NOTIFY_EVENTS} == {"question.asked", "approval.queued", "container.crash",
                                               "budget.warning"}
    assert notification("question.asked", {"id": 1}, 5.0) == {"event": "question.asked", "at": 5.0,
                                                              "payload": {"id": 1}}


def test_stopping_unsubscribes(tmp_path: Path, hub: Hub) -> None:
    got = tmp_path / "got.jsonl"
    cmd = script(tmp_path, "notify.sh", f'cat >> "{got}"\n')
    Notifier.start(str(cmd), hub).stop()
    hub.publish(QuestionAsked({"id": 1}))  # nobody runs it
    Notifier.start(str(cmd), hub)
    hub.publish(QuestionAsked({"id": 2}))
    wait_for(lambda: lines(got), what="the new notifier's run")
    assert [n["payload"] for n in lines(got)] == [{"id": 2}]
