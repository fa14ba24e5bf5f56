"""Costs on the dashboard and in `hive ls`, in a real browser against a real
daemon (issue 15, acceptance 1: "the dashboard shows the figures and the
sparkline"). A model call goes through alice's own gateway socket to the
scripted API server, priced by a table this test gives the daemon
(``--prices``): her row shows what it cost today, a sparkline with a bar and
her budget over its limit with the ``over budget`` badge; the fleet's total
in the header shows it too; `hive ls` has it in its TODAY column."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_anthropic import FakeAnthropic, Reply, text
from support import Hive, gateway_call, priced_hive

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore::ResourceWarning")]  # a daemon and a browser

MODEL = "claude-dash-e2e"  # the scripted server answers with the request's model
PRICES = {MODEL: {"input": 1000.0, "output": 0.0}}  # $0.001 a token: the reply's 420 input tokens are $0.42


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic([Reply([text("ok")], input_tokens=420, output_tokens=3)]) as f:
        yield f


@pytest.fixture
def hive(tmp_path: Path, fake: FakeAnthropic) -> Iterator[Hive]:
    h = priced_hive(tmp_path, fake.env(), PRICES).start()
    try:
        yield h
    finally:
        h.stop()


def test_a_model_call_shows_in_the_row_the_sparkline_and_the_fleet_total(
        browser_page: Any, hive: Hive, fake: FakeAnthropic) -> None:
    hive.spawn("alice", budget_usd=0.4, budget_per="day")
    hive.spawn("bob")
    page = browser_page
    page.goto(hive.login_url)
    page.wait_for_selector("#conn.live")
    alice = page.locator('#containers .rows > .row[data-key="alice"]')
    bob = page.locator('#containers .rows > .row[data-key="bob"]')
    fleet = page.locator("#fleet")
    # Before any call: $0.00, no bar; alice's budget untouched.
    assert alice.locator(".cost .today").inner_text() == "$0.00"
    assert alice.locator(".cost .budget").inner_text() == "$0.00/$0.40 per day"
    assert alice.locator("svg.spark rect.bar").count() == 0
    assert fleet.locator(".cost .today").inner_text() == "$0.00"

    reply = gateway_call(hive.paths.api_socket("alice"), MODEL)  # type: ignore[arg-type]
    assert reply.startswith(b"HTTP/1.1 200"), reply[:300]
    assert [r.body["model"] for r in fake.requests if r.method == "POST"] == [MODEL]

    # Pushed (a gateway.usage event repaints the row), no reload.
    page.wait_for_function(
        """() => { const t = document.querySelector('#containers .row[data-key="alice"] .cost .today');
                   return t && t.textContent === "$0.42"; }""", timeout=10_000)
    bar = alice.locator("svg.spark rect.bar")
    assert bar.count() == 1
    assert float(bar.get_attribute("height") or 0) > 0
    assert "$0.42 in the last 24 h" in alice.locator("svg.spark title").text_content()
    budget = alice.locator(".cost .budget")
    assert budget.inner_text() == "$0.42/$0.40 per day"
    assert "standing-over" in (budget.get_attribute("class") or "")
    assert budget.evaluate("n => getComputedStyle(n).color") == "rgb(255, 107, 107)"  # red: over
    badge = alice.locator(".chip.badge.over-budget")
    badge.wait_for(timeout=10_000)
    assert badge.inner_text() == "over budget"
    # bob spent nothing; the fleet's total has alice's call, with its own bar.
    assert bob.locator(".cost .today").inner_text() == "$0.00" and bob.locator(".chip.badge.over-budget").count() == 0
    page.wait_for_function("() => document.querySelector('#fleet .cost .today').textContent === '$0.42'")
    assert fleet.locator("svg.spark rect.bar").count() == 1
    assert "the fleet: $0.42 in the last 24 h" in fleet.locator("svg.spark title").text_content()

    # `hive ls`: the admin reply and the table.
    row = hive.ls()["alice"]
    assert "over-budget" in row["badges"] and row["cost"]["today_usd"] == pytest.approx(0.42)
    assert row["cost"]["budget"] == {"usd": 0.4, "per": "day", "spent_usd": pytest.approx(0.42)}
    assert "over-budget" not in hive.ls()["bob"]["badges"]
    out = subprocess.run([sys.executable, "-m", "hyperhive", "--state-dir", str(hive.state_dir), "ls"],
                         capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    at = out[0].index("TODAY")
    line = next(ln for ln in out if ln.startswith("alice "))
    assert line[at:].split()[0] == "$0.42" and "over-budget" in line
