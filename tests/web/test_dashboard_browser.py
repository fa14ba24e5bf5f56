"""The operator dashboard in a real browser (headless Debian chromium via
Playwright) against a real daemon with real builtin agents: acceptance items
1–5 and 7 of issue 6. One daemon for the module; each test leaves it usable.
The page logs in with the daemon's own login URL (issue 12); HTTP requests
carry the operator token (`Hive.get`)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from support import Hive, wait_for

from hyperhive import client

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore::ResourceWarning")]  # a daemon and a browser


@pytest.fixture(scope="module")
def dash(module_hive: Hive) -> Hive:
    module_hive.spawn("alice")
    return module_hive


@pytest.fixture
def page(browser_page: Any, dash: Hive) -> Iterator[Any]:
    browser_page.goto(dash.login_url)  # → the page, logged in
    browser_page.wait_for_selector("#conn.live")
    browser_page.wait_for_selector('#containers .row[data-key="alice"]')
    browser_page.evaluate("window.notReloaded = true")
    yield browser_page
    # Everything below happened without a reload.
    assert browser_page.evaluate("window.notReloaded") is True


def row(page: Any, section: str, key: object) -> Any:
    return page.locator(f'#{section} .rows > .row[data-key="{key}"]')


def m1nd_events(h: Hive, event: str) -> list[dict[str, Any]]:
    """Helper events in m1nd's inbox (delivered or not), parsed."""
    out = []
    for m in client.request(h.socket("m1nd"), "recent", limit=100)["messages"]:
        try:
            body = json.loads(m["body"])
        except ValueError:
            continue
        if m["from"] == "system" and isinstance(body, dict) and body.get("event") == event:
            out.append(body)
    return out


def answered(h: Hive, qid: int) -> dict[str, Any] | None:
    return next((e for e in m1nd_events(h, "OperatorAnswered") if e["id"] == qid), None)


def ask(h: Hive, question: str, options: list[str], multi: bool, ttl: float | None = None) -> int:
    fields: dict[str, Any] = {"question": question, "options": options, "multi": multi}
    if ttl is not None:
        fields["ttl_seconds"] = ttl
    return int(client.request(h.socket("m1nd"), "ask_operator", **fields)["question_id"])


# --- 1. questions -------------------------------------------------------------------
def test_question_arrives_live_ticks_and_is_answered(page: Any, dash: Hive) -> None:
    t0 = time.monotonic()
    qid = ask(dash, "Which ones?", ["opt1", "opt2", "opt3"], multi=True, ttl=3 * 60 + 30)
    q = row(page, "questions", qid)
    q.wait_for(timeout=1000)  # pushed: within 1 s, no reload
    assert time.monotonic() - t0 < 1.0
    chip = q.locator(".countdown")
    first = chip.inner_text()
    assert first.startswith("⏳ 3m ")
    page.wait_for_function("([sel, old]) => document.querySelector(sel).textContent !== old",
                           arg=[f'#questions .row[data-key="{qid}"] .countdown', first], timeout=3000)
    assert q.locator("input[type=checkbox]").count() == 3
    q.locator("input[value=opt1]").check()
    q.locator("input[value=opt2]").check()
    q.locator("input[name=text]").fill("and some text")
    q.locator("form.answer button").click()
    event = wait_for(lambda: answered(dash, qid), timeout=5, what="OperatorAnswered in m1nd's inbox")
    assert event["answer"] == "opt1, opt2, and some text" and event["how"] == "answered"
    q.wait_for(state="detached", timeout=2000)
    page.locator("#toasts .toast.ok").first.wait_for()


def test_radio_question_and_cancel_with_confirmation(page: Any, dash: Hive) -> None:
    qid = ask(dash, "Proceed?", ["yes", "no"], multi=False)
    q = row(page, "questions", qid)
    q.wait_for(timeout=1000)
    assert q.locator("input[type=radio]").count() == 2 and q.locator(".countdown").count() == 0
    dialogs: list[str] = []

    def on_dialog(d: Any) -> None:
        dialogs.append(d.message)
        d.accept()

    page.on("dialog", on_dialog)
    q.locator("form.cancel button").click()
    event = wait_for(lambda: answered(dash, qid), timeout=5, what="the cancel event")
    assert event["answer"] == "[cancelled]" and event["how"] == "cancelled"
    assert len(dialogs) == 1 and "[cancelled]" in dialogs[0] and "m1nd" in dialogs[0]
    q.wait_for(state="detached", timeout=2000)


# --- 2. lifecycle ----------------------------------------------------------------------
RECORD_PILLS = """name => {
  window.pills = [];
  const box = document.querySelector('#containers .rows');
  const look = () => {
    const p = box.querySelector(`.row[data-key="${name}"] .pill`);
    const t = p ? p.textContent : null;
    if (t && window.pills[window.pills.length - 1] !== t) window.pills.push(t);
  };
  new MutationObserver(look).observe(box, {subtree: true, childList: true, characterData: true});
}"""


def test_restart_shows_pending_then_running_and_kill(page: Any, dash: Hive) -> None:
    page.evaluate(RECORD_PILLS, "alice")
    alice = row(page, "containers", "alice")
    alice.get_by_role("button", name="restart", exact=True).click()
    page.wait_for_function("window.pills.includes('◐ restarting…') && "
                           "window.pills[window.pills.length - 1] === '● running'", timeout=10_000)
    wait_for(lambda: dash.ls()["alice"]["parked"]["system"] >= 1, timeout=20, what="alice's harness back")
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.accept()))
    alice.get_by_role("button", name="kill", exact=True).click()
    alice.locator(".pill", has_text="○ stopped").wait_for(timeout=10_000)
    assert len(dialogs) == 1 and "Kill alice" in dialogs[0]
    wait_for(lambda: any(e["agent"] == "alice" for e in m1nd_events(dash, "Killed")), timeout=5, what="Killed")
    alice.get_by_role("button", name="start", exact=True).click()
    alice.locator(".pill", has_text="● running").wait_for(timeout=10_000)
    wait_for(lambda: dash.ls()["alice"]["parked"]["system"] >= 1, timeout=20, what="alice's harness back")


def test_destroy_with_purge_asks_once(page: Any, dash: Hive) -> None:
    dash.spawn("dora")
    dora = row(page, "containers", "dora")
    dora.wait_for(timeout=2000)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.accept()))
    dora.locator("input[name=purge]").check()
    dora.get_by_role("button", name="destroy", exact=True).click()
    dora.wait_for(state="detached", timeout=15_000)
    assert len(dialogs) == 1 and "Destroy dora" in dialogs[0]
    wait_for(lambda: not (dash.paths.agents / "dora").exists(), timeout=5, what="dora's state purged")
    assert row(page, "tombstones", "dora").count() == 0


def test_destroy_keeps_state_then_revive_and_purge(page: Any, dash: Hive) -> None:
    dash.spawn("erin")
    erin = row(page, "containers", "erin")
    erin.wait_for(timeout=2000)
    page.on("dialog", lambda d: d.accept())
    erin.get_by_role("button", name="destroy", exact=True).click()
    erin.wait_for(state="detached", timeout=15_000)
    kept = row(page, "tombstones", "erin")
    kept.wait_for(timeout=2000)
    assert "no credentials" in kept.inner_text()
    kept.get_by_role("button", name="revive", exact=True).click()
    pending = page.locator("#approvals .rows > .row", has_text="spawn erin")
    pending.wait_for(timeout=2000)
    pending.get_by_role("button", name="approve", exact=True).click()
    erin.wait_for(timeout=15_000)
    kept.wait_for(state="detached", timeout=5000)
    wait_for(lambda: dash.ls()["erin"]["parked"]["system"] >= 1, timeout=20, what="erin's harness")
    erin.get_by_role("button", name="destroy", exact=True).click()
    kept.wait_for(timeout=15_000)
    kept.get_by_role("button", name="purge", exact=True).click()
    kept.wait_for(state="detached", timeout=5000)
    assert not (dash.paths.agents / "erin").exists()


def test_activity_reaches_the_row(page: Any, dash: Hive) -> None:
    """F41: what the harness reports (its heartbeat) shows in its row."""
    alice = row(page, "containers", "alice")
    alice.locator(".chip.activity", has_text="idle").wait_for(timeout=15_000)
    assert page.evaluate("window.hive.state.containers.find(c => c.name === 'alice').activity") == "idle"



def test_cgroup_usage_reaches_the_row(page: Any, dash: Hive) -> None:
    """Memory now/peak and the task count, from the daemon's 10 s refresh; a host
    without cgroups has none to show."""
    got = wait_for(lambda: dash.get_json("/api/state")[1]["state"]["containers"], what="the state")
    alice = next(c for c in got if c["name"] == "alice")
    if alice["memory"] is None:
        pytest.skip("no cgroup figures on this host")
    usage = row(page, "containers", "alice").locator(".meta.usage")
    usage.wait_for(timeout=15_000)
    assert usage.inner_text().startswith("mem ") and "pids" in usage.inner_text()


def test_agent_link_opens_its_web_ui_in_a_new_tab(page: Any, dash: Hive) -> None:
    """F36: the link goes to the agent's sticky port (the daemon-owned agents/<n>/port,
    where the daemon relays its UI), never to the harness's own state/web.port. One
    click and the UI works: the relay takes the dashboard's session (issue 12)."""
    port = int(wait_for(lambda: (dash.paths.agents / "alice" / "port").read_text().strip()))
    link = row(page, "containers", "alice").locator("a.web")
    assert link.get_attribute("target") == "_blank"
    assert link.get_attribute("href") == f"http://127.0.0.1:{port}/"
    with page.context.expect_page() as opened:
        link.click()
    tab = opened.value
    tab.wait_for_load_state()
    assert tab.url.startswith(f"http://127.0.0.1:{port}/") and tab is not page
    tab.wait_for_selector("body[data-ready='1']")  # its /api/state and history answered
    tab.wait_for_selector("#conn.up")  # its live stream is open
    tab.fill("#prompt-input", "a note through the relay")  # a POST, then its events stream back
    tab.press("#prompt-input", "Enter")
    tab.wait_for_selector(".ev-note:text('a note through the relay')")
    tab.wait_for_selector("#toast:text('note queued for the next turn')")
    tab.close()


# --- 3. spawn through an approval --------------------------------------------------------
def test_spawn_request_then_approve_brings_the_row_in(page: Any, dash: Hive) -> None:
    form = page.locator("#spawn-form")
    form.locator("input[name=name]").fill("carol")
    form.locator("textarea[name=prompt]").fill("be helpful")
    form.locator("button").click()
    pending = page.locator("#approvals .rows > .row", has_text="spawn carol")
    pending.wait_for(timeout=2000)
    assert "be helpful" in pending.inner_text()
    assert form.locator("input[name=name]").input_value() == ""  # the form was reset after success
    pending.get_by_role("button", name="approve", exact=True).click()
    row(page, "containers", "carol").wait_for(timeout=15_000)
    pending.wait_for(state="detached", timeout=5000)
    page.locator("#approvals .decided .row", has_text="spawn carol").wait_for(state="attached")


def test_failed_action_shows_an_error_toast_and_reenables(page: Any, dash: Hive) -> None:
    form = page.locator("#spawn-form")
    form.locator("input[name=name]").fill("alice")  # exists already
    form.locator("button").click()
    page.locator("#toasts .toast.err", has_text="already exists").wait_for()
    assert form.locator("button").is_enabled()


# --- 4. journal ---------------------------------------------------------------------------
def test_journal_loads_on_open_refreshes_and_switches_unit(page: Any, dash: Hive) -> None:
    alice = row(page, "containers", "alice")
    box = alice.locator("pre.jbox")
    assert box.count() == 0  # collapsed, nothing built or fetched yet
    with page.expect_response(lambda r: "/api/journal/alice?unit=harness" in r.url):
        alice.locator("details.journal summary").click()
    wait_for(lambda: "harness" in box.inner_text() or box.inner_text().strip() != "", timeout=5)
    assert box.evaluate("b => b.scrollTop + b.clientHeight >= b.scrollHeight - 2")
    assert box.evaluate("b => getComputedStyle(b).fontFamily").lower().find("mono") >= 0
    with page.expect_response(lambda r: "/api/journal/alice?unit=harness" in r.url):
        alice.locator("button.refresh").click()
    with page.expect_response(lambda r: "/api/journal/alice?unit=&" in r.url) as resp:
        alice.locator("select[name=unit]").select_option("")
    assert resp.value.json()["unit"] == ""
    wait_for(lambda: box.get_attribute("data-unit") == "", timeout=5)


# --- 5. operator inbox ----------------------------------------------------------------------
def test_inbox_shows_agent_message_and_page_send_reaches_agent(page: Any, dash: Hive) -> None:
    client.request(dash.socket("alice"), "send", to="operator", body="hello operator, from alice")
    page.locator("#inbox .rows > .row", has_text="hello operator, from alice").wait_for(timeout=1000)
    assert page.locator("#inbox .badge.unread").is_visible()
    form = page.locator("#send-form")
    form.locator("input[name=to]").fill("alice")
    form.locator("textarea[name=body]").fill("hi alice, from the page")
    form.locator("button").click()
    # alice's builtin driver quotes it back: it reached her.
    page.locator("#inbox .rows > .row", has_text='you said: "hi alice, from the page"').wait_for(timeout=10_000)
    got = client.request(dash.socket("alice"), "recent", limit=50)["messages"]
    assert any(m["from"] == "operator" and m["body"] == "hi alice, from the page" for m in got)
    page.locator("#inbox form.markread button").click()
    page.locator("#inbox .badge.unread").wait_for(state="hidden", timeout=2000)


# --- 7. metrics ------------------------------------------------------------------------------
def scrape(h: Hive) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    status, body = h.get("/metrics")
    assert status == 200, body
    text = body.decode()
    return {s.name + json.dumps(s.labels, sort_keys=True): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_metrics_parse_and_count_the_messages_sent(dash: Hive) -> None:
    wait_for(lambda: dash.ls()["alice"]["parked"]["system"] >= 1, what="alice's harness parked on its recv")
    before = scrape(dash)
    for i in range(5):
        dash.admin("send", to="alice", body=f"metrics {i}")
    # alice answers each one: 5 to alice, 5 back to the operator.
    after = wait_for(lambda: (m := scrape(dash))["hyperhive_messages_to_operator_total{}"]
                     >= before["hyperhive_messages_to_operator_total{}"] + 5 and m, timeout=10)
    assert after["hyperhive_messages_to_operator_total{}"] == before["hyperhive_messages_to_operator_total{}"] + 5
    assert after["hyperhive_messages_sent_total{}"] >= before["hyperhive_messages_sent_total{}"] + 10
    assert after['hyperhive_containers{"state": "running"}'] >= 2
    assert "hyperhive_pending_questions{}" in after and "hyperhive_parked_recvs{\"kind\": \"system\"}" in after
    # alice's harness waits parked on its recv: sends to her wake it (F45's wake latency histogram).
    assert after["hyperhive_wake_latency_seconds_count{}"] > before.get("hyperhive_wake_latency_seconds_count{}", 0)
    assert after["hyperhive_wake_latency_seconds_sum{}"] / after["hyperhive_wake_latency_seconds_count{}"] < 1.0
    # The sweep at start reports when it has run: on a fresh daemon that may come after
    # the scrapes above, so wait for it rather than assume the order.
    wait_for(lambda: 'hyperhive_vacuum_removed_total{"what": "messages"}' in scrape(dash), timeout=30,
             what="the sweep at start in /metrics")


@pytest.mark.parametrize(("path", "status", "code"), [
    ("/api/journal/nobody", 404, "unknown_agent"),
    ("/api/journal/Bad..Name", 400, "bad_name"),
    ("/api/journal/alice?unit=sshd", 400, "bad_request"),
    ("/api/journal/alice?lines=-5", 400, "bad_request"),
    ("/api/journal/alice?lines=abc", 400, "bad_request"),
])
def test_journal_refuses_bad_requests(dash: Hive, path: str, status: int, code: str) -> None:
    got, body = dash.get_json(path)
    assert (got, body["error"]["code"]) == (status, code), body


def test_journal_caps_lines(dash: Hive) -> None:
    got, body = dash.get_json("/api/journal/alice?lines=999999")
    assert got == 200 and body["lines"] == 5000 and body["unit"] == "harness"
