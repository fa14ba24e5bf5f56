"""``/metrics`` usage counters (issue 15): each call the gateway reports
(``GatewayUsage``) adds its tokens by kind and model and its cost at the
daemon's price table; the text parses with prometheus_client's parser."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hyperhive.actors.events import GatewayUsage
from hyperhive.pricing import DEFAULT_PRICES, Price, cost_usd, price_for
from hyperhive.web.dashboard.metrics import MODEL_LABEL_MAX, Metrics

SONNET = "claude-sonnet-4-5-20250929"


def usage(model: str | None, input: int = 0, output: int = 0, cache_read: int = 0,  # noqa: A002
          cache_write: int = 0) -> dict[str, Any]:
    return {"model": model, "input_tokens": input, "output_tokens": output, "cache_read_input_tokens": cache_read,
            "cache_creation_input_tokens": cache_write, "status": 200, "path": "/v1/messages", "ms": 3.0}


def parsed(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The exposition text, as a scraper reads it."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for fam in text_string_to_metric_families(generate_latest(m.registry).decode()):
        for s in fam.samples:
            if s.name.startswith(("hyperhive_tokens", "hyperhive_cost_usd")) and not s.name.endswith("_created"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def tok(agent: str, kind: str, model: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("hyperhive_tokens_total", (("agent", agent), ("kind", kind), ("model", model)))


def cost(agent: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("hyperhive_cost_usd_total", (("agent", agent),))


def test_tokens_by_kind_and_model_and_the_priced_cost_only_go_up() -> None:
    m = Metrics()
    first = usage(SONNET, 1000, 200, 5000, 300)
    second = usage(SONNET, 10, 2)
    m.on_event(GatewayUsage("alice", first))
    m.on_event(GatewayUsage("alice", second))
    m.on_event(GatewayUsage("bob", usage("claude-haiku-4-5", 50, 5)))
    got = parsed(m)
    assert got[tok("alice", "input", SONNET)] == 1010
    assert got[tok("alice", "output", SONNET)] == 202
    assert got[tok("alice", "cache_read", SONNET)] == 5000
    assert got[tok("alice", "cache_write", SONNET)] == 300
    assert got[tok("bob", "input", "claude-haiku-4-5")] == 50
    price, haiku = price_for(SONNET, DEFAULT_PRICES), price_for("claude-haiku-4-5", DEFAULT_PRICES)
    assert price is not None and haiku is not None
    assert got[cost("alice")] == pytest.approx(cost_usd(first, price) + cost_usd(second, price))
    assert got[cost("bob")] == pytest.approx(cost_usd(usage("x", 50, 5), haiku))
    # Kinds with no tokens make no series.
    assert tok("bob", "cache_read", "claude-haiku-4-5") not in got


def test_the_price_table_is_the_daemons() -> None:
    m = Metrics({"house-model": Price(1.0, 2.0, 0.5, 4.0)})
    m.on_event(GatewayUsage("carol", usage("house-model-7", 1_000_000, 1_000_000, 1_000_000, 1_000_000)))
    m.on_event(GatewayUsage("carol", usage(SONNET, 1_000_000)))  # not in this table: tokens, no cost
    got = parsed(m)
    assert got[cost("carol")] == pytest.approx(7.5)
    assert got[tok("carol", "input", SONNET)] == 1_000_000


def test_an_unknown_or_odd_model_label_stays_bounded() -> None:
    m = Metrics()
    m.on_event(GatewayUsage("dave", usage(None, 3)))
    m.on_event(GatewayUsage("dave", usage("m\n" + "x" * 500, 4)))
    got = parsed(m)
    assert got[tok("dave", "input", "unknown")] == 3
    [odd] = [k for k in got if k[0] == "hyperhive_tokens_total" and k[1][2][1] not in ("unknown",)]
    assert len(odd[1][2][1]) == MODEL_LABEL_MAX and "\n" not in odd[1][2][1]
    assert cost("dave") not in got  # neither is priced


def test_a_refused_call_with_no_usage_adds_nothing() -> None:
    m = Metrics()
    m.on_event(GatewayUsage("erin", {**usage(SONNET), "status": 400}))
    assert parsed(m) == {}


def test_an_absurd_count_is_capped_not_raised() -> None:
    m = Metrics()
    m.on_event(GatewayUsage("fay", usage(SONNET, 10**400)))
    assert parsed(m)[tok("fay", "input", SONNET)] == float(2**63 - 1)
