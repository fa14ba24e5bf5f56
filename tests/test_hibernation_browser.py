"""Hibernation on the dashboard, in a real browser against a real daemon
(issue 17, acceptance: "a browser test shows the hibernating state and the
wake"). With ``--hibernate-after-seconds 1`` alice's row shows ``☾ hibernating``
and ``/metrics`` counts her; the operator's message, sent through the page's
own send form, wakes her (the pill leaves hibernating: waking, then running),
her builtin reply shows in the page's operator inbox, and she hibernates again.
Every pill the row showed is recorded in the page (a MutationObserver), so a
transient too quick to poll is still seen, and a crash would be."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import Hive, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore::ResourceWarning")]  # a daemon and a browser

HIBERNATING = "☾ hibernating"
RUNNING = "pill running|● running"
# After the message: waking (transient), running (at least the second she is idle),
# hibernating (transient, while her harness is stopped), then hibernating.
WAKE_PILLS = {"pill pending|◐ waking…", RUNNING, "pill pending|◐ hibernating…"}
ROW = '#containers .rows > .row[data-key="alice"]'

# Every distinct "class|text" of alice's pill, in order, as the page drew them.
RECORD_PILLS = f"const alicePill = {json.dumps(ROW + ' .line1 .pill')};" + """
window.__pills = [];
new MutationObserver(() => {
  const p = document.querySelector(alicePill);
  if (!p) return;
  const v = p.className + "|" + p.textContent;
  if (window.__pills[window.__pills.length - 1] !== v) window.__pills.push(v);
}).observe(document, { subtree: true, childList: true, characterData: true, attributes: true });
"""

SCRAPE = """async () => { const r = await fetch("/metrics", { credentials: "same-origin" });
                            return r.status + "\\n" + await r.text(); }"""


@pytest.fixture
def hive(tmp_path: Path) -> Iterator[Hive]:
    h = Hive(tmp_path / "state", extra_args=["--hibernate-after-seconds", "1"]).start()
    try:
        yield h
    finally:
        h.stop()


def pills(page: Any) -> list[str]:
    return list(page.evaluate("() => window.__pills"))


def hibernating_gauge(page: Any) -> float:
    """``hyperhive_containers{state="hibernating"}`` from /metrics, fetched in the page (its session cookie)."""
    status, _, text = page.evaluate(SCRAPE).partition("\n")
    assert status == "200", (status, text[:300])
    m = re.search(r'^hyperhive_containers\{state="hibernating"\} (\S+)$', text, re.M)
    assert m is not None, text[:2000]
    return float(m.group(1))


def test_the_row_shows_hibernating_and_a_message_from_the_page_wakes_it(browser_page: Any, hive: Hive) -> None:
    from playwright.sync_api import expect

    page = browser_page
    page.add_init_script(RECORD_PILLS)
    page.goto(hive.login_url)
    page.wait_for_selector("#conn.live")
    hive.admin("spawn", name="alice")
    pill = page.locator(f"{ROW} .line1 .pill")

    # Idle for a second: hibernating, in the row and in /metrics.
    expect(pill).to_have_text(HIBERNATING, timeout=30_000)
    expect(pill).to_have_class("pill hibernating")
    wait_for(lambda: hibernating_gauge(page) >= 1, timeout=15, what="/metrics counting a hibernating container")
    assert hive.ls()["alice"]["state"] == "hibernating"

    # The operator writes to her through the page's own send form.
    before = len(pills(page))
    body = "wake up, from the page"
    form = page.locator("#send-form")
    form.locator('input[name="to"]').fill("alice")
    form.locator('textarea[name="body"]').fill(body)
    form.locator('button[type="submit"]').click()
    page.locator("#toasts .toast.ok", has_text="send: ok").wait_for(timeout=10_000)

    # The wake: the pill leaves hibernating (however briefly), and she answers.
    page.wait_for_function(f"() => window.__pills.slice({before}).some(v => !v.endsWith('|{HIBERNATING}'))",
                           timeout=30_000)
    reply = page.locator("#inbox .rows > .row.message",
                         has_text=f'[builtin reply from alice] you said: "{body}"')
    expect(reply).to_have_count(1, timeout=30_000)
    assert reply.locator(".line1 .name").inner_text() == "alice"

    # Then she sleeps again.
    page.wait_for_function(
        f"""() => {{ const seen = window.__pills.slice({before});
                     const woke = seen.findIndex(v => !v.endsWith('|{HIBERNATING}'));
                     return woke >= 0 && seen.slice(woke).some(v => v === 'pill hibernating|{HIBERNATING}'); }}""",
        timeout=30_000)
    expect(pill).to_have_text(HIBERNATING, timeout=30_000)
    wait_for(lambda: hibernating_gauge(page) >= 1, timeout=15, what="/metrics counting her asleep again")

    seen = pills(page)
    woke = seen[before:]
    awake = woke[:woke.index(f"pill hibernating|{HIBERNATING}", 1)]
    assert RUNNING in awake and set(awake) <= WAKE_PILLS, seen  # hibernating → waking/running → hibernating
    assert not any("crashed" in v for v in seen), seen
    assert "restarts" not in page.locator(f"{ROW} .line1 .meta").first.inner_text()
    assert hive.ls()["alice"]["restarts"] == 0  # a wake is no crash
