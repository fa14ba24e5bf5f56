#!/usr/bin/env python
"""Screenshots of the operator dashboard with real content (issue 6, item 8).

Starts a real daemon on a temp state dir with builtin agents, makes real
traffic (messages, an operator question from m1nd, a spawn request and a
config-commit approval with its diff, a destroyed agent's kept state), then
photographs the page in headless Debian chromium:

- docs/dashboard.png          the whole page
- docs/dashboard-journal.png  a container row with its journal open

Run from the repo root:  .venv/bin/python docs/screenshots.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from browser import CHROMIUM, LAUNCH_ARGS  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402
from support import Hive, wait_for  # noqa: E402

from hyperhive import client  # noqa: E402

OUT = REPO / "docs"


def content(h: Hive) -> None:
    h.spawn("alice")
    h.spawn("bob", allowed_recipients=["alice", "operator"])
    h.spawn("dave")
    h.admin("destroy", name="dave", purge=False)  # kept state: a tombstone
    h.admin("send", to="alice", body="please look at the flaky test in ci")
    h.admin("send", to="bob", body="send alice the build log is green again")
    client.request(h.socket("alice"), "send", to="operator", body="the flaky test waits on a sleep; fixing it")
    m1nd = h.socket("m1nd")
    client.request(m1nd, "ask_operator", question="Which agents may run the migration tonight?",
                   options=["alice", "bob", "nobody"], multi=True, ttl_seconds=2 * 3600 + 300)
    client.request(m1nd, "ask_operator", question="Ship 0.2 now or wait for the fix?",
                   options=["ship now", "wait"], ttl_seconds=185)
    client.request(m1nd, "request_spawn", name="carol", prompt="You review every merge request.",
                   allowed_recipients=["alice", "bob", "m1nd"])
    cfg = h.paths.agents / "alice" / "config"
    (cfg / "prompt.md").write_text("You are alice. You fix flaky tests and explain each fix.\n")
    git = ["git", "-C", str(cfg), "-c", "user.name=m1nd", "-c", "user.email=m1nd@hive"]
    subprocess.run([*git, "commit", "-qam", "alice: sharper prompt"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    client.request(m1nd, "request_apply_commit", agent="alice", commit=head)
    # Not `hive inbox`: that marks them read, and the unread badge belongs in the picture.
    wait_for(lambda: len(h.get_json("/api/state")[1]["state"]["inbox"]["messages"]) >= 3, timeout=10,
             what="the agents' replies")


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="hive-shots-"))
    h = Hive(tmp / "state").start()
    try:
        content(h)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.goto(h.login_url)  # the operator's login URL (`hive url`): the session cookie
            page.wait_for_selector('#containers .row[data-key="bob"]')
            page.wait_for_selector("#approvals .rows .diffbox")
            page.wait_for_timeout(1200)  # a countdown tick
            page.screenshot(path=str(OUT / "dashboard.png"), full_page=True)
            alice = page.locator('#containers .row[data-key="alice"]')
            alice.locator("details.journal summary").click()
            page.wait_for_function("document.querySelector('#containers .row[data-key=\"alice\"] pre.jbox')"
                                   "?.textContent.length > 0")
            page.locator("#containers").screenshot(path=str(OUT / "dashboard-journal.png"))
            # alice's own web UI (F29–F31): her terminal of events, state badge, inbox.
            # Same browser context: the dashboard's session opens it, as one click on its link does.
            agent = context.new_page()
            agent.set_viewport_size({"width": 1100, "height": 760})
            agent.goto(h.agent_url("alice") + "/")
            agent.wait_for_function("document.querySelectorAll('#term > *').length > 3")
            agent.wait_for_timeout(300)
            agent.screenshot(path=str(OUT / "agent.png"))
            browser.close()
    finally:
        h.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    for f in ("dashboard.png", "dashboard-journal.png", "agent.png"):
        print(f"docs/{f}: {(OUT / f).stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
