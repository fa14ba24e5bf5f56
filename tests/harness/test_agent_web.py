"""The agent's web UI, served by a real harness subprocess: its HTTP API, its
live websocket, and (in a real headless Chromium) the terminal panel: history
backfill mid-turn, banner, badge, prompt row, inbox (F27, F29-F31).

The harness here serves on a direct TCP port (``--web-port``): no daemon
started it and no sandbox reaches it, so that path stays unauthenticated; the
daemon-relayed UI behind the operator's session is in
tests/security/test_surfaces.py and tests/web/test_dashboard_browser.py."""

from __future__ import annotations

import json
import shutil
import threading
from typing import Any

import pytest
import tornado.websocket
from agent_harness import HarnessProc, claude_env, take_over
from fake_anthropic import FakeAnthropic, Reply, text, tool_use
from support import Hive, wait_for

pytestmark = pytest.mark.e2e  # a daemon, a harness subprocess, a browser


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a LISTEN socket on ``port`` (from /proc/net/tcp{,6})."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for ln in lines:
            local, state = ln.split()[1], ln.split()[3]
            addr, p = local.split(":")
            if int(p, 16) == port and state == "0A":
                out.add(addr)
    return out


def test_api_state_notes_and_refusals(hive: Hive) -> None:
    take_over(hive, "a")
    a = HarnessProc(hive, "a", "builtin", claude_env({})).start()
    try:
        assert _listening_addresses(a.port) == {"0100007F"}  # 127.0.0.1 only
        st = a.get("/api/state")
        assert {k: st[k] for k in ("ok", "name", "driver", "state", "turn_open", "can_compact")} == {
            "ok": True, "name": "a", "driver": "builtin", "state": "idle", "turn_open": False, "can_compact": False,
        }
        assert st["inbox"] == [] and st["inbox_error"] is None

        # The prompt row's note: into the agent's own next turn (builtin answers the operator).
        mark = a.last_id()
        assert a.post("/send", {"body": "hello from the web"}) == (202, {"ok": True, "queued": True})
        a.wait_kind("turn_end", after=mark)
        events = [e for e in a.get("/events/history")["events"] if e["id"] > mark]
        assert [e["kind"] for e in events][:2] == ["note", "turn_start"]
        assert events[0]["data"] == {"body": "hello from the web"}
        assert events[1]["data"]["messages"] == [{"id": 0, "from": "operator", "body": "hello from the web"}]
        wait_for(lambda: any('you said: "hello from the web"' in m["body"]
                             for m in hive.admin("inbox", limit=20)["messages"]), what="builtin's answer")

        # The inbox comes from `recent` on the agent's socket.
        mark = a.last_id()
        hive.admin("send", to="a", body="for the inbox")
        a.wait_kind("turn_end", after=mark)
        assert any(m["body"] == "for the inbox" for m in a.get("/api/state")["inbox"])

        # Refusals change nothing.
        before = a.last_id()
        assert a.post("/send", {"body": "x"}, content_type="application/x-www-form-urlencoded")[0] == 400
        assert a.post("/send", {"body": "   "})[1]["error"]["code"] == "bad_request"
        assert a.post("/send", {"text": "wrong key"})[0] == 400
        status, resp = a.post("/send", {"body": "lone \ud800 surrogate"})  # JSON-escaped: the wire's rule
        assert status == 400 and resp["error"]["code"] == "bad_request" and "surrogate" in resp["error"]["message"]
        deep: dict[str, object] = {"body": "x"}
        for _ in range(40):
            deep = {"body": "x", "n": deep}
        assert a.post("/send", deep)[0] == 400
        status, resp = a.post("/compact")
        assert status == 409 and "builtin" in resp["error"]["message"]
        assert a.post("/cancel") == (200, {"ok": True, "cancelled": False})
        assert a.last_id() == before
    finally:
        a.stop()


async def test_live_stream_replays_after_id_then_follows(hive: Hive) -> None:
    take_over(hive, "a")
    a = HarnessProc(hive, "a", "builtin", claude_env({})).start()
    try:
        first = a.last_id()
        ws = await tornado.websocket.websocket_connect(f"ws://127.0.0.1:{a.port}/events/live?after={first - 1}")
        replayed = json.loads(await ws.read_message())  # type: ignore[arg-type]
        assert replayed["id"] == first
        a.post("/send", {"body": "stream me"})
        got: list[dict[str, Any]] = []
        while not got or got[-1]["kind"] != "turn_end":
            got.append(json.loads(await ws.read_message()))  # type: ignore[arg-type]
        ws.close()
    finally:
        a.stop()
    ids = [e["id"] for e in got]
    assert ids == sorted(ids) and ids[0] == first + 1
    assert [e["kind"] for e in got][:2] == ["note", "turn_start"]


@pytest.mark.skipif(shutil.which("claude") is None, reason="needs the Claude Code CLI (.ci/run)")
def test_page_opened_mid_turn_backfills_then_streams(hive: Hive, browser_page: Any) -> None:
    page = browser_page
    take_over(hive, "a")
    release = threading.Event()
    script = [Reply([text("let me look"), tool_use("mcp__hyperhive__recent", {"limit": 5})]),
              Reply([text("finished looking")], hold=release)]
    with FakeAnthropic(script) as fake:
        a = HarnessProc(hive, "a", "claude", claude_env(fake.env())).start()
        try:
            # Idle, empty inbox: no banner, no inbox section.
            page.goto(a.url + "/")
            page.wait_for_selector("body[data-ready='1']")
            assert page.inner_text("#state") == "idle"
            assert not page.eval_on_selector("#banner", "b => b.classList.contains('active')")
            assert page.is_hidden("#inbox")

            hive.admin("send", to="a", body="what is in your inbox?")
            a.wait(lambda: len(fake.main_requests()) == 2, what="the held second request")
            a.wait_kind("tool_result")

            # Opened mid-turn: the last events are there, the banner shimmers, nothing animates.
            page.reload()
            page.wait_for_selector("body[data-ready='1']")
            kinds = page.eval_on_selector_all(".ev", "rows => rows.map(r => r.dataset.kind)")
            assert kinds[-4:] == ["turn_start", "text", "tool_use", "tool_result"]
            anims = page.eval_on_selector_all(
                ".ev", "rows => rows.map(r => [r.classList.contains('no-anim'), getComputedStyle(r).animationName])")
            assert anims and all(a_ == [True, "none"] for a_ in anims)
            assert page.eval_on_selector("#banner", "b => b.classList.contains('active')")
            assert page.eval_on_selector("#banner", "b => getComputedStyle(b).animationName") == "shimmer"
            assert page.inner_text("#state") == "thinking"
            assert "mcp__hyperhive__recent" in page.inner_text(".ev-tool_use")
            assert page.is_visible("#inbox") and page.inner_text("#inbox-count") == "(1)"

            # The turn finishes: new rows stream in, animated; the banner stops; the badge is idle.
            release.set()
            page.wait_for_selector(".ev-turn_end")
            new = page.eval_on_selector_all(
                ".ev:not(.no-anim)", "rows => rows.map(r => [r.dataset.kind, getComputedStyle(r).animationName])")
            assert ["text", "fade-in"] in new and ["turn_end", "fade-in"] in new
            assert "finished looking" in page.inner_text("#term")
            page.wait_for_function("document.getElementById('state').textContent === 'idle'")
            assert not page.eval_on_selector("#banner", "b => b.classList.contains('active')")
            assert page.evaluate("(() => { const t = document.getElementById('term');"
                                 " return t.scrollHeight - t.scrollTop - t.clientHeight < 24; })()")

            # The prompt row: slash commands and a note.
            page.fill("#prompt-input", "/cancel")
            page.press("#prompt-input", "Enter")
            page.wait_for_selector("#toast:text('no turn was running')")
            page.fill("#prompt-input", "/bogus")
            page.press("#prompt-input", "Enter")
            page.wait_for_selector("#toast.err:text('unknown command /bogus')")
            mark = a.last_id()
            page.fill("#prompt-input", "a note from the page")
            page.press("#prompt-input", "Enter")
            page.wait_for_selector(".ev-note:text('a note from the page')")
            a.wait_kind("turn_end", after=mark)
            page.screenshot(path=str(a.state_dir / "agent-page.png"), full_page=True)
        finally:
            release.set()
            a.stop()


def test_needs_login_until_credentials_exist(hive: Hive) -> None:
    take_over(hive, "a")
    a = HarnessProc(hive, "a", "claude", claude_env({})).start()  # no API key in its environment
    try:
        st = a.get("/api/state")
        assert (st["driver"], st["needs_login"], st["can_compact"]) == ("claude", True, True)
        assert a.post("/compact")[1]["error"] == {"code": "conflict", "message": "no conversation to compact yet"}
        creds = a.state_dir / ".claude" / ".credentials.json"
        creds.parent.mkdir(exist_ok=True)
        creds.write_text("{}")
        assert a.get("/api/state")["needs_login"] is False
    finally:
        a.stop()
