"""A hostile agent against its budget (issue 15): from a shell inside its own
sandbox it calls the model API itself (the relay to its gateway on
127.0.0.1:8787), outside any turn once it is over budget, and it lies on
its own socket about what its turns cost. The gateway counts what the API
returned, refuses it past its budget, and a lie moves no budget."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_anthropic import FakeAnthropic, Reply, text
from support import Hive, priced_hive, wait_for
from test_sandbox import py, run_cmd

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("bwrap") is None, reason="a root daemon with bubblewrap"),
]

PRICED = "claude-budget-test"


def _call(out: str) -> str:
    """Python run inside the sandbox: one Messages API call through the relay, its status and body into ``out``."""
    return (
        "import json, urllib.request, urllib.error\n"
        "req = urllib.request.Request('http://127.0.0.1:8787/v1/messages', method='POST', data=json.dumps("
        "{'model': 'x', 'max_tokens': 5, 'messages': [{'role': 'user', 'content': 'hi'}]}).encode(), "
        "headers={'content-type': 'application/json', 'x-api-key': 'mine'})\n"
        "try:\n r = urllib.request.urlopen(req, timeout=30); s, b = r.status, r.read()\n"
        "except urllib.error.HTTPError as e:\n s, b = e.code, e.read()\n"
        f"open({out!r}, 'wb').write(str(s).encode() + b' ' + b)\nprint('STATUS', s)\n")


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(lambda body: Reply([text("ok")], input_tokens=1200, output_tokens=0, model=PRICED)) as f:
        yield f


@pytest.fixture
def hive(tmp_path: Path, fake: FakeAnthropic) -> Iterator[Hive]:
    h = priced_hive(tmp_path, fake.env(), {PRICED: {"input": 1000, "output": 1000}}, "--sandbox", "on",
                    "--fleet-budget-usd", "100").start()
    try:
        yield h
    finally:
        h.stop()


def _calls(fake: FakeAnthropic) -> int:
    return sum(1 for r in fake.requests if r.method == "POST")


def test_over_budget_its_own_calls_outside_a_turn_are_refused(hive: Hive, fake: FakeAnthropic) -> None:
    hive.spawn("h", budget_usd=1.0)
    work = hive.paths.workspace("h")  # type: ignore[arg-type]
    later = ("import os, sys, time\nif os.fork():\n sys.exit(0)\nos.setsid()\n"  # out of the run's group
             "for fd in (0, 1, 2):\n os.close(fd)\n"
             f"while not os.path.exists({str(work / 'go')!r}):\n time.sleep(0.05)\n" + _call(str(work / "after.txt")))
    # In a turn (the builtin driver's `run`): the call goes through and is counted ($1.20 of $1.00);
    # and it leaves a process behind (its own session) for after the turn.
    status, out = run_cmd(hive, "h", py(_call(str(work / "first.txt"))) + " && " + py(later))
    assert "STATUS 200" in out, out
    assert _calls(fake) == 1
    # Its harness is held (over budget, outside any turn); now the process left behind calls.
    wait_for(lambda: [e for e in hive.log_events() if e.get("event") == "spend.held" and e.get("agent") == "h"],
             timeout=30, what="h held by its budget")
    (work / "go").write_text("")
    answer = wait_for(lambda: (work / "after.txt").read_bytes() if (work / "after.txt").exists() else None,
                      timeout=30, what="the call after the turn")
    assert answer.startswith(b"400 ") and b"over its budget" in answer, answer
    assert _calls(fake) == 1  # never reached the API


def test_a_lie_about_a_turns_cost_moves_no_budget(hive: Hive, fake: FakeAnthropic) -> None:
    import asyncio

    from hyperhive.client import AsyncClient

    hive.spawn("liar")

    async def lie() -> list[dict[str, Any]]:
        c = AsyncClient(hive.socket("liar"))
        try:
            out = [await c.request("turn_slot"), await c.request("turn_done", cost_usd=99.0)]
            out.append(await c.request("turn_done", cost_usd=1e6))  # no turn held: nothing to report on
            return out
        finally:
            await c.close()

    replies = asyncio.run(lie())
    assert replies[0]["granted"] is True
    assert not [e for e in hive.log_events() if e.get("event") in ("spend.standing", "budget.exceeded")]
    assert hive.admin("questions")["pending"] == []
