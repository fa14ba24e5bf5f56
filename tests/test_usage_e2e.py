"""Usage end to end (issue 15, acceptance 1): a real daemon whose gateway
forwards to the scripted API server; model calls made on an agent's own
``api.sock`` are what `hive usage --json`, the manager's ``usage`` tool and
``/metrics`` show, exactly the tokens the server returned."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_anthropic import FakeAnthropic, Reply, text
from mcp_support import mcp_session, tool_json
from prometheus_client.parser import text_string_to_metric_families
from support import Hive, gateway_call, wait_for

from hyperhive.client import AsyncClient
from hyperhive.errors import Forbidden
from hyperhive.pricing import DEFAULT_PRICES, cost_usd, price_for

pytestmark = pytest.mark.e2e  # every test here starts a daemon

SONNET = "claude-sonnet-4-5-20250929"
REPLIES = [Reply([text("one")], input_tokens=1234, output_tokens=56),
           Reply([text("two")], input_tokens=789, output_tokens=1011)]


def cli(hive: Hive, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hyperhive", "--state-dir", str(hive.state_dir), *args],
                          capture_output=True, text=True, timeout=60, check=check)


async def on_socket(path: Path, op: str, **fields: Any) -> dict[str, Any]:
    c = AsyncClient(path)
    try:
        return await c.request(op, **fields)
    finally:
        await c.close()


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(list(REPLIES)) as f:
        yield f


@pytest.fixture(scope="module")
def hive(tmp_path_factory: pytest.TempPathFactory, fake: FakeAnthropic) -> Iterator[Hive]:
    h = Hive(tmp_path_factory.mktemp("usage") / "state", env=fake.env()).start()
    try:
        h.spawn("alice", budget_usd=5.0, budget_per="day")
        h.spawn("bob")
        for stream in (True, False):
            reply = gateway_call(h.paths.api_socket("alice"), SONNET, stream, max_tokens=64)  # type: ignore[arg-type]
            assert reply.startswith(b"HTTP/1.1 200"), reply[:300]
        yield h
    finally:
        h.stop()


def expected_cost() -> float:
    price = price_for(SONNET, DEFAULT_PRICES)
    assert price is not None
    return sum(cost_usd({"input_tokens": r.input_tokens, "output_tokens": r.output_tokens}, price) for r in REPLIES)


def usage_json(hive: Hive, since: str = "24h") -> dict[str, Any]:
    return json.loads(cli(hive, "usage", "--since", since, "--json").stdout)


def test_hive_usage_shows_exactly_the_tokens_the_server_returned(hive: Hive, fake: FakeAnthropic) -> None:
    reply = wait_for(lambda: (r := usage_json(hive)) and r["fleet"]["calls"] == 2 and r,
                     timeout=10, what="both calls in the ledger")
    assert set(reply) == {"since", "agents", "fleet"} and reply["since"] == "24h"
    agents = {a["name"]: a for a in reply["agents"]}
    assert list(agents) == sorted(agents)
    # The builtin harnesses' turns (their boot kicks) made no model call.
    assert all(a["calls"] == 0 and a["cost_usd"] == 0 for name, a in agents.items() if name != "alice")
    alice = agents["alice"]
    assert alice["calls"] == 2 and alice["turns"] == 0  # made outside any turn: counted all the same
    assert alice["tokens"] == {"input": 1234 + 789, "output": 56 + 1011, "cache_read": 0, "cache_write": 0}
    assert alice["cost_usd"] == pytest.approx(expected_cost(), abs=1e-6)
    assert alice["cost_reported"] is False and alice["unpriced_calls"] == 0
    assert alice["today_usd"] == pytest.approx(expected_cost(), abs=1e-6)
    assert alice["budget"] == {"usd": 5.0, "per": "day", "spent_usd": pytest.approx(expected_cost(), abs=1e-6)}
    fleet = reply["fleet"]
    assert fleet["calls"] == 2 and fleet["tokens"] == alice["tokens"] and fleet["budget"] is None
    assert fleet["turns"] == sum(a["turns"] for a in agents.values())
    assert fleet["cost_usd"] == pytest.approx(alice["cost_usd"], abs=1e-6)
    assert len([r for r in fake.requests if r.method == "POST"]) == 2
    assert [a for a in usage_json(hive, "all")["agents"] if a["name"] == "alice"] == [alice]

    table = cli(hive, "usage").stdout.splitlines()
    assert table[0] == "usage over the last 24h"
    [row] = [line for line in table if line.startswith("alice")]
    assert "2,023" in row and "1,067" in row and row.endswith("of $5.00 per day")
    assert any(line.startswith("(fleet)") for line in table)


def test_a_bad_window_is_refused_with_the_grammar(hive: Hive) -> None:
    out = cli(hive, "usage", "--since", "a week", check=False)
    assert out.returncode == 2
    assert "bad_request: since must be 'all' or a whole number of hours or days" in out.stderr


def test_the_manager_reads_the_figures_and_no_other_agent_may(hive: Hive) -> None:
    def figures(reply: dict[str, Any]) -> list[tuple[str, int, dict[str, int], float]]:
        return [(a["name"], a["calls"], a["tokens"], a["cost_usd"]) for a in reply["agents"]]

    want = usage_json(hive, "7d")
    got = asyncio.run(on_socket(hive.socket("m1nd"), "usage", since="7d"))
    assert figures(got) == figures(want) and ("alice", 2) in [f[:2] for f in figures(got)]
    with pytest.raises(Forbidden, match="usage is the manager's"):
        asyncio.run(on_socket(hive.socket("bob"), "usage"))

    async def through_mcp() -> Any:
        async with mcp_session(hive.socket("m1nd")) as s:
            assert "usage" in {t.name for t in (await s.list_tools()).tools}
            return tool_json(await s.call_tool("usage", {"since": "all"}))

    tool = asyncio.run(through_mcp())
    assert set(tool) == {"since", "agents", "fleet"}
    assert figures(tool) == figures(want)

    async def bob_mcp() -> set[str]:
        async with mcp_session(hive.socket("bob")) as s:
            return {t.name for t in (await s.list_tools()).tools}

    assert "usage" not in asyncio.run(bob_mcp())


def test_metrics_count_the_tokens_and_the_cost(hive: Hive) -> None:
    status, body = hive.get("/metrics")
    assert status == 200
    got = {(s.name, tuple(sorted(s.labels.items()))): s.value
           for fam in text_string_to_metric_families(body.decode()) for s in fam.samples}
    key = (("agent", "alice"), ("kind", "input"), ("model", SONNET))
    assert got[("hyperhive_tokens_total", key)] == 1234 + 789
    assert got[("hyperhive_tokens_total", (("agent", "alice"), ("kind", "output"), ("model", SONNET)))] == 56 + 1011
    assert got[("hyperhive_cost_usd_total", (("agent", "alice"),))] == pytest.approx(expected_cost(), abs=1e-9)
