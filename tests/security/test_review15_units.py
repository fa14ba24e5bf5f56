"""Review of issue 15: the fixes' rules without a daemon (the e2e files beside this
one are the attacks): the calls in flight in the hard cap, unpriced calls at the
dearest price, the API's nested usage figures and their prices, a big answer's
usage read from its ends."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from hyperhive.budgets import Budget
from hyperhive.pricing import CACHE_1H_KEY, DEFAULT_PRICES, SEARCHES_KEY, Price, cost_usd, parse_prices
from hyperhive.sandbox.sse_usage import JsonUsage, usage_from_json, usage_from_sse
from hyperhive.web.tables.spend import Spend

M = Price(1000.0, 1000.0, 1000.0, 1000.0)  # $1 per 1000 tokens


def spend(**budgets: Budget) -> Spend:
    return Spend({"m": M}, budgets.get, now=lambda: 1_718_600_000.0)


def test_calls_in_flight_share_the_headroom_to_the_hard_cap() -> None:
    s = spend(a=Budget(1.0, "day"))  # cap $1.50
    one, two, three = object(), object(), object()
    assert s.cut("a", {"model": "m", "input_tokens": 500}, one) is None
    assert s.cut("a", {"model": "m", "input_tokens": 500}, two) is None
    assert s.refusal("a") is not None  # $1.00 in flight, none recorded: over its budget, outside a turn
    s.turn_started("a")
    assert s.refusal("a") is None  # in a turn it may go on, under the cap
    assert s.cut("a", {"model": "m", "input_tokens": 500}, three) == \
        "a reached its hard cap ($1.50, 1.5 x $1.00 per day)"
    assert s.refusal("a") is not None  # $1.50 in flight: no new call
    s.done("a", three)
    assert s.refusal("a") is None
    s.done("a", one)
    s.done("a", two)
    s.done("a", two)  # twice: nothing
    assert s.cut("a", {"model": "m", "input_tokens": 1499}) is None  # no call: its own usage only, as before


def test_the_fleet_counts_every_agents_calls_in_flight() -> None:
    s = Spend({"m": M}, lambda a: None, Budget(1.0, "day"), now=lambda: 1_718_600_000.0)
    assert s.cut("a", {"model": "m", "input_tokens": 800}, "a1") is None
    assert s.cut("b", {"model": "m", "input_tokens": 800}, "b1") == \
        "the fleet reached its hard cap ($1.50, 1.5 x $1.00 per day)"
    assert s.refusal("c") is not None


def test_a_turns_unpriced_calls_count_at_the_dearest_price_in_the_gate() -> None:
    s = spend(a=Budget(1.0, "day"))
    s.turn_started("a")
    for _ in range(3):
        assert s.refusal("a") is None
        s.record("a", {"model": "other", "input_tokens": 600})
    assert s.spent("a") == 0.0  # nothing summed yet: the turn's report decides
    assert s.refusal("a") is not None  # $1.80 at the dearest price: past the cap
    s.turn_ended("a")  # no report: the dearest price
    assert s.spent("a") == pytest.approx(1.8)


def test_nested_usage_figures_are_kept_and_priced() -> None:
    sse = [b'event: message_start\ndata: {"type":"message_start","message":{"model":"claude-sonnet-4-5",'
           b'"usage":{"input_tokens":10,"cache_creation_input_tokens":1000,"cache_creation":'
           b'{"ephemeral_1h_input_tokens":1000}}}}\n\n',
           b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":5,'
           b'"server_tool_use":{"web_search_requests":3}}}\n\n']
    usage = usage_from_sse(sse)
    assert usage is not None and usage[CACHE_1H_KEY] == 1000 and usage[SEARCHES_KEY] == 3
    sonnet = DEFAULT_PRICES["claude-sonnet-4"]
    assert cost_usd(usage, sonnet) == pytest.approx((10 * 3 + 1000 * 6 + 5 * 15) / 1e6 + 0.03)
    # An hour-long count above the writes counts no more than the writes.
    assert cost_usd({CACHE_1H_KEY: 10**6, "cache_creation_input_tokens": 1}, sonnet) == pytest.approx(6 / 1e6)
    assert cost_usd({SEARCHES_KEY: True}, sonnet) == 0.0  # a bool is no count


def test_long_context_rates_past_the_threshold_only() -> None:
    sonnet = DEFAULT_PRICES["claude-sonnet-4"]
    at = {"input_tokens": 200_000, "output_tokens": 10}
    assert cost_usd(at, sonnet) == pytest.approx((200_000 * 3 + 10 * 15) / 1e6)
    past = {"input_tokens": 100_000, "cache_read_input_tokens": 100_001, "output_tokens": 10}
    assert cost_usd(past, sonnet) == pytest.approx((100_000 * 6 + 100_001 * 0.6 + 10 * 22.5) / 1e6)
    assert cost_usd(past, replace(sonnet, long_context=0)) == pytest.approx((100_000 * 3 + 100_001 * 0.3 + 150) / 1e6)


def test_a_prices_file_may_give_the_hour_long_write_and_the_long_context() -> None:
    rows = parse_prices({"x": {"input": 2, "output": 4, "cache_write_1h": 9, "long_context_above": 1000}})
    assert rows["x"].write_1h == 9 and rows["x"].long_context == 1000
    assert parse_prices({"x": {"input": 2, "output": 4}})["x"].write_1h == 4
    with pytest.raises(Exception, match="long_context_above"):
        parse_prices({"x": {"input": 2, "output": 4, "long_context_above": -1}})


def test_a_big_answers_usage_comes_from_its_ends_and_not_from_a_tool_input() -> None:
    answer = json.dumps({"id": "m", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                         "content": [{"type": "text", "text": "x" * 300_000},
                                     {"type": "tool_use", "id": "t", "name": "t",
                                      "input": {"usage": {"input_tokens": 1}, "model": "free"}}],
                         "stop_reason": "tool_use", "usage": {"input_tokens": 7000, "output_tokens": 9}}).encode()
    scan = JsonUsage(limit=100_000, keep=4096)
    for i in range(0, len(answer), 7777):
        scan.feed(answer[i:i + 7777])
    assert scan.result() == usage_from_json(answer) == {
        "model": "claude-sonnet-4-5", "input_tokens": 7000, "output_tokens": 9, "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0}
    cut = JsonUsage(limit=100_000, keep=4096)
    cut.feed(answer[:-60])  # no usage at its end: none
    assert cut.result() is None
