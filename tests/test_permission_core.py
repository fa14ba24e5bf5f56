"""Permission questions, pure (issue 14, item 3): the question's text for Bash,
Edit, Write and any other tool, what the dashboard renders, and the CLI's
answer for allow / from now on / deny / free text / expiry / cancel."""

from __future__ import annotations

import pytest

from hyperhive.actors.permission_core import (
    behavior,
    check_tool_name,
    options_for,
    question_text,
    render,
)
from hyperhive.actors.questions_core import MAX_QUESTION, merge_answer
from hyperhive.errors import BadRequest


def test_bash_question_names_the_agent_and_the_command() -> None:
    assert question_text("alice", "Bash", {"command": "touch /w/x"}) == "`alice` wants to run Bash: `touch /w/x`"
    assert question_text("alice", "Bash", {"command": "make", "description": "build it"}) == (
        "`alice` wants to run Bash: `make`\n(build it)")
    assert render("Bash", {"command": "ls -la"}) == {"kind": "command", "text": "ls -la", "description": ""}


def test_edit_shows_the_file_and_a_diff() -> None:
    inp = {"file_path": "/w/a.py", "old_string": "x = 1\ny = 2", "new_string": "x = 1\ny = 3"}
    shown = render("Edit", inp)
    assert shown["kind"] == "diff" and shown["file"] == "/w/a.py"
    assert "-y = 2" in shown["text"] and "+y = 3" in shown["text"] and "--- a/w/a.py" in shown["text"]
    text = question_text("bob", "Edit", inp)
    assert text.startswith("`bob` wants to edit /w/a.py (Edit):\n") and "+y = 3" in text
    multi = render("MultiEdit", {"file_path": "f.txt", "edits": [{"old_string": "a", "new_string": "b"},
                                                                  {"old_string": "c", "new_string": "d"}]})
    assert multi["kind"] == "diff" and "-a" in multi["text"] and "+d" in multi["text"]


def test_write_shows_the_file_and_its_content() -> None:
    inp = {"file_path": "/w/new.txt", "content": "hello\nworld\n"}
    assert render("Write", inp) == {"kind": "content", "file": "/w/new.txt", "text": "hello\nworld\n"}
    assert question_text("bob", "Write", inp) == "`bob` wants to write /w/new.txt (Write):\nhello\nworld\n"


def test_other_tools_show_their_input_as_json() -> None:
    text = question_text("bob", "WebFetch", {"url": "https://x.example", "prompt": "read"})
    assert text.startswith("`bob` wants to use WebFetch:\n{") and '"url": "https://x.example"' in text
    assert render("Bash", {})["kind"] == "json"  # no command: shown as it is
    assert len(question_text("bob", "Write", {"file_path": "/f", "content": "x" * 100_000})) <= MAX_QUESTION


def test_options_and_tool_names() -> None:
    assert options_for("Bash") == ["allow", "allow Bash from now on", "deny"]
    assert check_tool_name("mcp__other__tool") == "mcp__other__tool"
    for bad in ("", "Bash(rm:*)", "a,b", "x" * 200, "../x", 3, None, "Bash\n"):
        with pytest.raises(BadRequest):
            check_tool_name(bad)


def _answered(chosen: list[str], text: str = "") -> str:
    return merge_answer(options_for("Bash"), False, chosen, text)


def test_behavior_for_each_outcome() -> None:
    inp = {"command": "ls"}
    assert behavior("Bash", inp, _answered(["allow"]), "answered") == (
        {"behavior": "allow", "updatedInput": inp}, False)
    assert behavior("Bash", inp, _answered(["allow"], "once only"), "answered") == (
        {"behavior": "allow", "updatedInput": inp}, False)
    assert behavior("Bash", inp, _answered(["allow Bash from now on"]), "answered") == (
        {"behavior": "allow", "updatedInput": inp}, True)
    assert behavior("Bash", inp, _answered(["deny"]), "answered") == (
        {"behavior": "deny", "message": "the operator denied this Bash call"}, False)
    assert behavior("Bash", inp, _answered(["deny"], "too risky"), "answered") == (
        {"behavior": "deny", "message": "the operator denied this Bash call: too risky"}, False)
    # Free text alone is a reason to deny, never a yes.
    assert behavior("Bash", inp, _answered([], "allow"), "answered")[0]["behavior"] == "allow"  # it is the option
    assert behavior("Bash", inp, _answered([], "use ls -l"), "answered") == (
        {"behavior": "deny", "message": "the operator denied this Bash call: use ls -l"}, False)
    assert behavior("Bash", inp, _answered([], "allowed? no"), "answered")[0]["behavior"] == "deny"
    assert behavior("Bash", inp, "deny", "expired") == (
        {"behavior": "deny", "message": "the operator did not answer in time; this Bash call is denied"}, False)
    assert behavior("Bash", inp, "[cancelled]", "cancelled")[0]["behavior"] == "deny"
