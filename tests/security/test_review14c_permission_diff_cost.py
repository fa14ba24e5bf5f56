"""Third review of issue 14 (hostile agent or model): one Edit's permission
question holds the Questions actor for half a minute.

`permission_core` renders an Edit as a unified diff (``difflib``) on the
Questions actor's one thread, before it decides the call is too long to show
(`unshowable` diffs first, then measures). difflib's matcher costs about
(lines × the occurrences of each line) in pure Python: old and new strings of
100 000 two-character lines each, drawn from 105 values (each under difflib's
1 % "junk" cut, so none is skipped), take ~25 s, and the whole ``permission``
request is one 1 000 149-byte line (under the wire's MAX_LINE, 1 MiB). The
rate limit (30 a minute) lets one agent keep the actor
busy for good: every operator question, answer and cancel, every other agent's
permission question and every harness's ``grants`` at turn start wait behind
it (``hive questions`` times out).

Fixed (hyperhive/actors/permission_core.py ``unshowable``): an Edit/MultiEdit
whose old and new strings hold more than ``MAX_DIFF_LINES`` lines is denied
before it is diffed (a diff of that many lines could not be shown whole
anyway, unless nearly all of it were unchanged context).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path

from test_permission_questions import World

from hyperhive.actors.permission_core import MAX_DIFF_LINES, unshowable
from hyperhive.web.operator import gate, permissions


def adversarial(lines: int, values: int) -> dict[str, str]:
    rnd = random.Random(7)
    vals = [f"{i:x}" for i in range(values)]
    old, new = ("\n".join(rnd.choices(vals, k=lines)) for _ in range(2))
    return {"file_path": "/w/f.txt", "old_string": old, "new_string": new}


async def test_an_edit_question_does_not_hold_the_questions_actor(tmp_path: Path) -> None:
    w = World(tmp_path)
    await w.start_questions()
    try:
        inp = adversarial(90_000, 910)  # ~650 KB: seconds of difflib before the fix
        task = asyncio.ensure_future(permissions.permission(w.questions, "alice", "Edit", json.dumps(inp), "t", 60))
        await asyncio.sleep(0)  # the task runs up to its tell: the actor's inbox has it first
        t0 = time.monotonic()
        await gate.questions(w.questions)  # the operator's `hive questions`
        took = time.monotonic() - t0
        out = await task
        assert out["decision"]["behavior"] == "deny"
        assert took < 1.0, f"the operator's question listing waited {took:.1f} s behind one agent's Edit"
    finally:
        w.close()


def test_a_huge_edit_is_denied_before_it_is_diffed() -> None:
    t0 = time.monotonic()
    reason = unshowable("Edit", adversarial(120_000, 110))
    assert reason is not None and time.monotonic() - t0 < 1.0
    many = {"file_path": "/f", "edits": [{"old_string": "a\n" * 600, "new_string": "b\n" * 600}] * 5}
    assert "more than" in (unshowable("MultiEdit", many) or "")
    assert MAX_DIFF_LINES >= 2000  # an ordinary edit still is asked
    assert unshowable("Edit", {"file_path": "/f", "old_string": "a\nb", "new_string": "a\nc"}) is None
