"""Permission questions on the dashboard, in a real browser against a real
daemon (issue 14, acceptance 3): the tool's input rendered (a command in
monospace, an edit as a diff), answered there; "from now on" shows the grant
with a revoke button, and revoking it makes the next call ask again. The
tool call comes in on the agent's own socket, exactly as `hive mcp` sends it
for the Claude Code CLI."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from support import Hive, wait_for

from hyperhive import client

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore::ResourceWarning")]  # a daemon and a browser


class Call(threading.Thread):
    """One parked ``permission`` request on alice's socket."""

    def __init__(self, hive: Hive, tool: str, inp: dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.hive, self.tool, self.inp = hive, tool, inp
        self.reply: dict[str, Any] | None = None

    def run(self) -> None:
        self.reply = client.request(self.hive.socket("alice"), "permission", timeout=60, tool_name=self.tool,
                                    input_json=json.dumps(self.inp), tool_use_id="toolu_x")


def _call(hive: Hive, tool: str, inp: dict[str, Any]) -> Call:
    c = Call(hive, tool, inp)
    c.start()
    return c


def test_permission_questions_render_and_grants_revoke(browser_page: Any, module_hive: Hive) -> None:
    hive = module_hive
    hive.spawn("alice")
    page = browser_page
    page.goto(hive.login_url)
    page.wait_for_selector("#conn.live")
    dialogs: list[str] = []

    def on_dialog(d: Any) -> None:
        dialogs.append(d.message)
        d.accept()

    page.on("dialog", on_dialog)

    # An edit: a diff, with its added and removed lines marked.
    edit = _call(hive, "Edit", {"file_path": "/w/app.py", "old_string": "x = 1", "new_string": "x = 2"})
    t0 = time.monotonic()
    q = page.locator("#questions .rows > .row.permission").first
    q.wait_for(timeout=5000)
    assert time.monotonic() - t0 < 5
    assert "alice wants to edit /w/app.py (Edit)" in q.locator(".qtext").inner_text()
    assert q.locator("pre.perm-diff .diff-del").inner_text().strip() == "-x = 1"
    assert q.locator("pre.perm-diff .diff-add").inner_text().strip() == "+x = 2"
    q.locator('input[value="deny"]').check()
    q.locator('input[name="text"]').fill("keep x at 1")
    q.locator("form.answer button").click()
    edit.join(10)
    assert edit.reply is not None and edit.reply["decision"] == {
        "behavior": "deny", "message": "the operator denied this Edit call: keep x at 1"}
    q.wait_for(state="detached", timeout=5000)

    # A command, in monospace; allowed from now on: the grant shows with its revoke button.
    bash = _call(hive, "Bash", {"command": "make test <&> 'quoted'"})
    q = page.locator("#questions .rows > .row.permission").first
    q.wait_for(timeout=5000)
    assert q.locator("pre.perm-command").inner_text() == "make test <&> 'quoted'"  # text, never markup
    font = q.locator("pre.perm-command").evaluate("n => getComputedStyle(n).fontFamily")
    assert "mono" in font.lower()
    q.locator('input[value="allow Bash from now on"]').check()
    q.locator("form.answer button").click()
    bash.join(10)
    assert bash.reply is not None and bash.reply["decision"]["behavior"] == "allow"
    grant = page.locator('#questions .grants .row.grant[data-agent="alice"]')
    grant.wait_for(timeout=7000)
    assert "Bash" in grant.inner_text()
    # Granted: the next Bash call is allowed with no question.
    again = _call(hive, "Bash", {"command": "ls"})
    again.join(10)
    assert again.reply is not None and again.reply["decision"]["behavior"] == "allow"
    assert again.reply["question_id"] is None

    grant.locator("button", has_text="revoke").click()
    grant.wait_for(state="detached", timeout=7000)
    assert dialogs and "Revoke Bash from alice" in dialogs[-1]
    assert json.loads((hive.paths.agent("alice") / "granted-tools.json").read_text()) == []  # type: ignore[arg-type]
    after = _call(hive, "Bash", {"command": "ls"})
    pending = wait_for(lambda: hive.admin("questions")["pending"], timeout=5, what="asked again")
    hive.admin("cancel_question", question_id=pending[0]["id"])
    after.join(10)
    assert after.reply is not None and after.reply["decision"]["behavior"] == "deny"
