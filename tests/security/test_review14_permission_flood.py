"""Review of issue 14 (hostile agent): the cap of 16 pending permission
questions per agent bounds what waits, not what is asked.

An agent's socket serves ``permission`` directly (no CLI needed). Ask 16,
close the connection (each parked op is cancelled, and with it its question:
``Questions.abandon``), ask 16 more, forever: every round is 16 new rows in
``operator_questions`` (kept, resolved "cancelled"), 16 ``question.asked``
events, so 16 runs of the operator's F42 notify command (its phone) and 16
dashboard pushes. Nothing limits the rate, and the resolved rows are never
pruned (retention covers messages only).

Proposed fix (hyperhive/actors/questions.py ``ask_permission``, ~line 244):
count an agent's permission questions asked in a sliding window (say 60 per
10 minutes, pending or not) and refuse past it (Conflict "too many tool
questions"), or coalesce: an abandoned question counts against the cap until
its TTL would have run out. And do not notify for a question abandoned within
a second (the Notifier could wait a beat and drop resolved ones).
"""

from __future__ import annotations

import asyncio
import json

import pytest
from support import async_wait_for
from test_permission_questions import World

from hyperhive.store.models import Question
from hyperhive.web.operator import permissions

ROUNDS = 12


@pytest.fixture
async def world(tmp_path):  # type: ignore[no-untyped-def]
    w = World(tmp_path)
    await w.start_questions()
    yield w
    w.close()



async def test_asking_and_abandoning_in_a_loop_is_bounded(world: World) -> None:
    for r in range(ROUNDS):
        tasks = [asyncio.ensure_future(permissions.permission(
            world.questions, "alice", "Bash", json.dumps({"command": f"true {r}-{i}"}), f"toolu_{r}_{i}", 600))
            for i in range(16)]
        # Each call is pending, or already answered (a bounded rate denies some at once).
        await async_wait_for(lambda tasks=tasks: Question.select().where(  # type: ignore[misc]
            (Question.asker == "alice") & Question.how.is_null()).count() + sum(t.done() for t in tasks) == 16,
            interval=0.002, what="16 pending or refused")
        for t in tasks:  # the agent closes its connection
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await async_wait_for(lambda: Question.select().where(
            (Question.asker == "alice") & Question.how.is_null()).count() == 0, interval=0.002,
            what="all abandoned")
    asked = [e for e in world.events if e[0] == "question.asked"]
    total = Question.select().where(Question.asker == "alice").count()
    # Today: ROUNDS * 16 = 192 questions and notifications within a second or two.
    assert total <= 64 and len(asked) <= 64, f"{total} questions, {len(asked)} notifications from one agent"


