"""Third review of issue 14 (hostile agent): one ``permission`` op kills the
Questions actor.

``Questions.ask_permission`` is told (``defer``: no pykka reply future), and
catches only HiveError and ValueError; pykka stops an actor on any other
exception in such a message. The tool input is the agent's: the rendering of
the question (`permission_core._whole`: ``json.dumps`` of the input, the
extra keys' values) recurses once per level of the input's nesting, and an
input nested a few levels short of the interpreter's recursion limit parses
but does not render: RecursionError, and the actor is gone. Every operator
question, answer and cancel, every agent's permission question and its
harness's ``grants`` at turn start then fail ("the daemon is shutting down")
until the daemon restarts.

On Python 3.11 (this venv) the agent socket's own parse of the input (on the
IOLoop, `web.operator.permissions.permission`) happens to refuse those depths
first, by a few stack frames; on 3.12 (nixpkgs' python3 from 24.11 on, which
`nix/package.nix` builds with) the C JSON parser has a limit of its own and
lets ``{"x": [[[…1200…]]]}`` (2.4 KB) through, and the actor dies
(reproduced by hand with 3.12.1). So the test below hands the actor the raw
input, as the IOLoop does after its parse, at every depth the actor itself
can parse (found first with a granted tool, which is parsed and not rendered).

Fixed (hyperhive/actors/permission_core.py ``unshowable``): an input nested
deeper than ``MAX_DEPTH`` (32) is denied before anything renders it (measured
without recursion). Proposed beyond it (hyperhive/actors/questions.py
``ask_permission``, not this helper's to edit): catch every Exception there
(fail the reply with Internal), as `bridge.answer` does, so no input can stop
the actor; and refuse such nesting at the op already
(web/operator/permissions.py), so the IOLoop's parse is bounded too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from test_permission_questions import World

from hyperhive.actors.bridge import Handle
from hyperhive.actors.grants import GRANTS_FILE
from hyperhive.actors.permission_core import MAX_DEPTH, unshowable
from hyperhive.actors.questions import Questions
from hyperhive.web.operator import gate


def nested(depth: int) -> str:
    return '{"command": "ls", "x": ' + "[" * depth + "]" * depth + "}"


async def ask(w: World, tool: str, raw: str, within: float = 3.0) -> Any:
    try:
        return await Handle(w.questions).within(within).ask(Questions.ask_permission, "alice", tool, raw, "t", 5)
    except Exception as exc:  # noqa: BLE001 - what the agent gets back does not matter here
        return exc


async def _parse_limit(tmp_path: Path) -> int:
    """The deepest input the actor's own ``json.loads`` takes (a granted tool: parsed, never rendered):
    one less than the first depth in 800…1199 that it refuses or that stops it, 1200 if none. Found by
    bisection: a depth the parser refuses (its recursion limit), it refuses nested deeper too."""
    lo, hi = 800, 1200  # the first failing depth is in lo…hi (hi: none fails)
    w: World | None = None
    try:
        while lo < hi:
            if w is None or not w.questions.actor_ref.is_alive():  # (a new one after a depth that stopped it)
                if w is not None:
                    w.close()
                home = tmp_path / f"calibrate-{lo}-{hi}"
                home.mkdir()
                w = World(home)
                (w.paths.agent("alice") / GRANTS_FILE).write_text(json.dumps(["Granted"]))
                await w.start_questions()
            depth = (lo + hi) // 2
            out = await ask(w, "Granted", nested(depth))
            if w.questions.actor_ref.is_alive() and isinstance(out, dict):
                lo = depth + 1
            else:
                hi = depth
        return 1200 if lo == 1200 else lo - 1
    finally:
        if w is not None:
            w.close()


async def test_no_tool_input_the_actor_can_parse_stops_the_questions_actor(tmp_path: Path) -> None:
    limit = await _parse_limit(tmp_path)
    (tmp_path / "attack").mkdir()
    w = World(tmp_path / "attack")
    await w.start_questions()
    try:
        for depth in range(limit - 15, limit + 1):  # 16 asks: under the rate limit (30 a minute), all rendered
            await ask(w, "Bash", nested(depth))
            assert w.questions.actor_ref.is_alive(), (
                f"one permission op nested {depth} deep stopped the Questions actor: every question is gone")
        await ask(w, "Bash", nested(depth=3), within=0.05)  # still asked (it parks; the timeout then abandons it)
        listing = await gate.questions(w.questions)
        assert listing["resolved"] and listing["resolved"][0]["permission"]["tool_name"] == "Bash"
    finally:
        w.close()


def test_a_deep_input_is_denied_without_being_rendered() -> None:
    for tool in ("Bash", "Edit", "Write", "SomeTool"):
        inp = json.loads(nested(MAX_DEPTH + 1))
        reason = unshowable(tool, inp)
        assert reason is not None and "nests deeper" in reason
    assert unshowable("Bash", json.loads(nested(MAX_DEPTH - 2))) is None
