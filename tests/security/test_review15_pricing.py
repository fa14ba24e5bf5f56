"""Review of issue 15 (hostile agent): what the API bills that the price table
did not see. The agent picks each of these in its own request (a header, a
field of the body); the gateway forwards it; the usage the API answers names
it; the cost counted ignored it:

- 1-hour prompt-cache writes (``cache_control: {"type": "ephemeral", "ttl":
  "1h"}``) cost 2 x the input price, not the 5-minute 1.25 x: the answer's
  ``usage.cache_creation.ephemeral_1h_input_tokens`` says how many (Claude
  Code's own requests use them too): counted 37.5 % short;
- server-side web search is billed per search, $10 per 1000
  (``usage.server_tool_use.web_search_requests``): counted as $0;
- Sonnet 4 / 4.5 with the 1M-token context: a prompt over 200k input tokens
  (cache reads and writes included) is billed at the long-context rates, 2 x
  input (and cache) and 1.5 x output: counted at half.

Fixed (hyperhive/sandbox/sse_usage.py keeps the two nested figures;
hyperhive/pricing.py prices them: ``Price.cache_write_1h`` (2 x input unless
given), ``WEB_SEARCH_USD``, ``Price.long_context`` on the claude-sonnet-4 row).

The prices here are the daemon's defaults (no ``--prices``): Anthropic's list.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_anthropic import FakeAnthropic, Reply, text
from support import Hive, wait_for
from test_review15_gateway_leave import Upstream, request_code
from test_review15_gateway_leave import pytestmark as _marks
from test_sandbox import py, run_cmd

pytestmark = _marks

SONNET = "claude-sonnet-4-5-20250929"  # $3 in, $15 out, $0.30 cache read, $3.75 cache write (5 min) per million


class Shaped(Reply):
    """An answer whose usage has the API's nested figures: ``start`` in message_start, ``end`` in the
    final message_delta (and both in a non-streamed answer)."""

    def __init__(self, start: dict[str, Any], end: dict[str, Any], **kw: Any) -> None:
        super().__init__([text("ok")], model=SONNET, **kw)
        self.start, self.end = start, end

    def usage(self, output_tokens: int | None = None) -> dict[str, Any]:
        return {**super().usage(output_tokens), **self.start, **(self.end if output_tokens is None else {})}

    def delta_usage(self) -> dict[str, Any]:
        return {**super().delta_usage(), **self.end}


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture
def fake(upstream: Upstream) -> Iterator[FakeAnthropic]:
    with FakeAnthropic(upstream) as f:
        yield f


@pytest.fixture
def hive(tmp_path: Path, fake: FakeAnthropic) -> Iterator[Hive]:
    h = Hive(tmp_path / "state", ["--sandbox", "on"], env=fake.env()).start()
    try:
        yield h
    finally:
        h.stop()


def call_once(hive: Hive, agent: str, marker: str, stream: bool) -> None:
    code = request_code(marker, stream, "s = conn()\nbuf = read_until(s, b'never')\nprint('STATUS', buf[9:12])\n")
    status, out = run_cmd(hive, agent, py(code))
    assert "STATUS b'200'" in out, out


def cost(hive: Hive, agent: str) -> float:
    for row in hive.admin("usage", since="all")["agents"]:
        if row["name"] == agent:
            return float(row["cost_usd"])
    return 0.0


def wait_cost(hive: Hive, agent: str, usd: float) -> None:
    try:
        wait_for(lambda: cost(hive, agent) == pytest.approx(usd) or None, timeout=15, what=f"${usd}")
    except AssertionError:
        raise AssertionError(f"{agent}: the API bills ${usd:.6f}, counted ${cost(hive, agent):.6f}") from None


@pytest.mark.parametrize("stream", [True, False])
def test_one_hour_cache_writes_cost_twice_the_input_price(hive: Hive, upstream: Upstream, stream: bool) -> None:
    upstream.rules["cache-1h"] = lambda: Shaped(
        {"cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 100_000}}, {},
        input_tokens=10, output_tokens=0, cache_write_tokens=100_000)
    hive.spawn("cacher")
    call_once(hive, "cacher", "cache-1h", stream)
    wait_cost(hive, "cacher", (10 * 3 + 100_000 * 6) / 1e6)  # $0.60003 (counted: $0.37503)


def test_web_searches_are_billed_per_search(hive: Hive, upstream: Upstream) -> None:
    upstream.rules["search"] = lambda: Shaped({}, {"server_tool_use": {"web_search_requests": 50}},
                                              input_tokens=1000, output_tokens=100)
    hive.spawn("searcher")
    call_once(hive, "searcher", "search", True)
    wait_cost(hive, "searcher", (1000 * 3 + 100 * 15) / 1e6 + 50 * 0.01)  # $0.5045 (counted: $0.0045)


@pytest.mark.parametrize("stream", [True, False])
def test_a_prompt_over_200k_tokens_costs_the_long_context_rates(hive: Hive, upstream: Upstream,
                                                                 stream: bool) -> None:
    upstream.rules["long"] = lambda: Reply([text("ok")], model=SONNET, input_tokens=150_000, output_tokens=1000,
                                           cache_read_tokens=60_000)
    hive.spawn("reader")
    call_once(hive, "reader", "long", stream)
    # 210k input tokens in all: $6 in, $22.50 out, $0.60 cache read per million (counted at $3 / $15 / $0.30).
    wait_cost(hive, "reader", (150_000 * 6 + 1000 * 22.5 + 60_000 * 0.6) / 1e6)


def test_a_prompt_of_200k_tokens_costs_the_standard_rates(hive: Hive, upstream: Upstream) -> None:
    upstream.rules["long"] = lambda: Reply([text("ok")], model=SONNET, input_tokens=200_000, output_tokens=1000)
    hive.spawn("reader")
    call_once(hive, "reader", "long", True)
    wait_cost(hive, "reader", (200_000 * 3 + 1000 * 15) / 1e6)
