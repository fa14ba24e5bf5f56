"""Review 14 fixes in the permission questions: a rate per agent (a sliding
window), no announcement for a question its caller dropped at once, resolved
rows pruned per agent, and what the operator is shown being what runs
(escaped, every input key, never cut). Pure rules and the real actor on a real
sqlite file."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support import async_wait_for
from test_permission_questions import World, _ask, _one_pending

from hyperhive.actors.permission_core import (
    ANNOUNCE_GRACE,
    KEEP_RESOLVED,
    KIND,
    RATE_LIMIT,
    RATE_WINDOW,
    admit,
    behavior,
    question_text,
    render,
    safe,
    unshowable,
)
from hyperhive.actors.questions import Questions
from hyperhive.store.models import Question
from hyperhive.web.operator import gate


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = World(tmp_path)
    await w.start_questions()
    yield w
    w.close()


GRACE = 0.1  # the announce grace of `quick`: a fifth of ANNOUNCE_GRACE, well past an ask-and-drop's few ms


@pytest.fixture
async def quick(tmp_path: Path) -> AsyncIterator[World]:
    """A world whose Questions actor announces after GRACE, not ANNOUNCE_GRACE."""
    w = World(tmp_path, announce_grace=GRACE)
    await w.start_questions()
    yield w
    w.close()


# --- pure ----------------------------------------------------------------------
def test_the_window_admits_a_limit_then_refuses_until_old_ones_leave() -> None:
    recent: list[float] = []
    for i in range(3):
        recent, ok = admit(recent, 100.0 + i, limit=3, window=10)
        assert ok
    recent, ok = admit(recent, 105.0, limit=3, window=10)
    assert not ok and recent == [100.0, 101.0, 102.0]  # a refusal does not count
    recent, ok = admit(recent, 111.5, limit=3, window=10)
    assert ok and recent == [102.0, 111.5]


def test_every_hidden_character_is_escaped_but_lines_and_tabs_in_a_text() -> None:
    assert safe("a\u202eb\u2066c\u061cd\u200be\ufefff\U000e0041g\x1b[2K\rh\x85") == (
        "a\\u202eb\\u2066c\\u061cd\\u200be\\ufefff\\U000e0041g\\x1b[2K\\rh\\x85")
    assert safe("a\nb\tc", "\n\t") == "a\nb\tc" and safe("a\nb") == "a\\nb"
    assert safe("héllo wörld ✓") == "héllo wörld ✓"


def test_every_input_key_is_shown() -> None:
    bash = render("Bash", {"command": "make", "description": "build", "timeout": 600000,
                           "run_in_background": True})
    assert bash == {"kind": "command", "text": "make",
                    "description": "[run_in_background: true; timeout: 600000] · build"}
    multi = render("MultiEdit", {"file_path": "/w/a", "edits": [
        {"old_string": "a", "new_string": "b", "replace_all": True}, "junk"]})
    assert multi["text"].splitlines()[:2] == ["edits[0].replace_all: true", 'edits[1]: "junk"']
    odd = render("Edit", {"file_path": "/w/a", "old_string": 5, "new_string": "x"})
    assert odd["text"].splitlines()[0] == "old_string: 5"  # not a string: not in the diff, so listed
    write = render("Write", {"file_path": "/w/a", "content": "x", "mode": "0755"})
    assert write["text"] == 'mode: "0755"\nx'
    assert render("MultiEdit", {"file_path": "/w/a", "edits": "not a list"})["text"] == 'edits: "not a list"'


def test_a_carriage_return_in_an_edit_is_shown_not_a_line_break() -> None:
    diff = render("Edit", {"file_path": "/w/a", "old_string": "ok", "new_string": "ok\rrm -rf ~"})["text"]
    assert "+ok\\rrm -rf ~" in diff.splitlines()


def test_what_would_be_cut_is_denied_and_never_asked() -> None:
    for tool, inp in (("Bash", {"command": "x" * 6001}), ("Bash", {"command": "ls", "description": "d" * 1001}),
                      ("Write", {"file_path": "/" + "p" * 1000, "content": ""}),
                      ("Bash", {"command": "ls\u202e" * 1000}),  # escaping makes it longer than it looks
                      ("Read", {"file_path": "/w", "junk": "y" * 6000})):
        why = unshowable(tool, inp)
        assert why is not None and "too long to show the operator whole" in why, (tool, inp)
        decision, grant = behavior(tool, inp, f"allow {tool} from now on", "answered")
        assert decision == {"behavior": "deny", "message": why} and not grant
    fits = {"command": "x" * 6000, "description": "d" * 1000}
    assert unshowable("Bash", fits) is None
    assert question_text("a" * 64, "Bash", fits).endswith("d" * 1000 + ")")  # the question is whole too


# --- the actor ------------------------------------------------------------------
async def _ask_and_drop(w: World, n: int, tag: str) -> list[dict[str, object]]:
    """Ask ``n`` at once, drop the ones still waiting; the answers of those that were not."""
    tasks = [_ask(w, inp={"command": f"true {tag}-{i}"}) for i in range(n)]
    await async_wait_for(lambda: Question.select().where(Question.how.is_null()).count()
                         + sum(t.done() for t in tasks) == n, interval=0.002, what="asked")
    done = [t.result() for t in tasks if t.done()]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await async_wait_for(lambda: Question.select().where(Question.how.is_null()).count() == 0, interval=0.002,
                         what="dropped")
    return done


async def test_past_the_rate_a_call_is_denied_at_once_and_dropped_ones_never_announced(world: World) -> None:
    assert RATE_LIMIT == 30 and RATE_WINDOW == 60.0
    refused = [*await _ask_and_drop(world, 16, "a"), *await _ask_and_drop(world, 16, "b"),
               *await _ask_and_drop(world, 16, "c")]
    assert Question.select().count() == RATE_LIMIT
    assert len(refused) == 48 - RATE_LIMIT
    assert all(r["question_id"] is None and r["decision"]["behavior"] == "deny"  # type: ignore[index]
               and "too many tool questions" in r["decision"]["message"] for r in refused)  # type: ignore[index]
    assert len([n for n, _ in world.events if n == "question.asked"]) <= RATE_LIMIT  # (none, unless slow)


def test_the_announce_grace_is_half_a_second_unless_given() -> None:
    assert ANNOUNCE_GRACE == 0.5
    assert inspect.signature(Questions.__init__).parameters["announce_grace"].default == ANNOUNCE_GRACE


async def test_a_question_dropped_at_once_is_never_announced(quick: World) -> None:
    world = quick
    task = _ask(world)
    q = await _one_pending(world)
    task.cancel()  # the caller goes away within the grace
    await async_wait_for(lambda: Question.get_by_id(q["id"]).how == "cancelled", interval=0.002,
                         what="the abandoned question")
    # A check that nothing comes: the grace has passed (0.5 + 0.3 s before, scaled with the grace).
    await asyncio.sleep(max(0.0, q["asked_at"] + GRACE * 1.6 - time.time()))
    await gate.questions(world.questions)  # and an announce told by then has been handled
    assert [n for n, _ in world.events if n.startswith("question.")] == ["question.resolved"]


async def test_a_question_still_pending_after_the_grace_is_announced_once(quick: World) -> None:
    world = quick
    task = _ask(world)
    q = await _one_pending(world)
    assert not any(n == "question.asked" for n, _ in world.events)
    await async_wait_for(lambda: any(n == "question.asked" for n, _ in world.events), interval=0.002,
                         what="announced")
    await gate.answer(world.questions, q["id"], ["deny"], "")
    await task
    assert [n for n, _ in world.events if n.startswith("question.")] == ["question.asked", "question.resolved"]


async def test_resolved_permission_questions_are_pruned_per_agent(world: World) -> None:
    for who in ("alice", "bob"):
        Question.insert_many([{"asker": who, "question": "q", "asked_at": 1.0, "how": "cancelled", "kind": KIND}
                              for _ in range(KEEP_RESOLVED + 50)]).execute()
    Question.create(asker="alice", question="plain", asked_at=1.0, how="answered")  # not a permission
    task = _ask(world)
    q = await _one_pending(world)
    await gate.answer(world.questions, q["id"], ["allow"], "")
    await task
    mine = (Question.asker == "alice") & (Question.kind == KIND)
    assert Question.select().where(mine).count() == KEEP_RESOLVED
    assert Question.select().where(mine & (Question.id == q["id"])).exists()  # the newest are kept
    assert Question.select().where(Question.asker == "bob").count() == KEEP_RESOLVED + 50
    assert Question.select().where(Question.question == "plain").count() == 1
    assert json.loads(str(Question.get_by_id(q["id"]).detail))["tool_name"] == "Bash"
