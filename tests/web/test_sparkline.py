"""The dashboard's cost texts and its sparkline (issue 15), pure: the SVG is
well-formed, its bars follow the values, what is no finite amount counts as
nothing, and its title (the total) is escaped."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from hyperhive.web.dashboard.cost_views import (
    BUCKETS,
    budget_text,
    cost_cell,
    fleet_series,
    reported_agents,
    spark_since,
    usd_text,
)
from hyperhive.web.dashboard.sparkline import MAX_BUCKETS, MAX_VALUE, clean, sparkline

SVG = "{http://www.w3.org/2000/svg}"


def parse(markup: str) -> ET.Element:
    return ET.fromstring(markup)  # raises on markup that is not well-formed


def bars(markup: str) -> list[dict[str, float]]:
    return [{k: float(v) for k, v in r.attrib.items() if k != "class"}
            for r in parse(markup).iter(f"{SVG}rect") if r.get("class") == "bar"]


def title(markup: str) -> str:
    node = parse(markup).find(f"{SVG}title")
    assert node is not None
    return node.text or ""


def test_empty_is_a_base_line_and_a_zero_total() -> None:
    svg = sparkline([], 96, 20)
    root = parse(svg)
    assert root.tag == f"{SVG}svg" and root.get("width") == "96" and root.get("height") == "20"
    assert bars(svg) == [] and title(svg) == "total 0.00"
    assert [r.get("class") for r in root.iter(f"{SVG}rect")] == ["base"]


def test_all_zero_draws_no_bar() -> None:
    svg = sparkline([0.0] * 24, 72, 16)
    assert bars(svg) == [] and title(svg) == "total 0.00"


def test_one_spike_is_the_one_full_height_bar_in_its_slot() -> None:
    values = [0.0] * 24
    values[23] = 0.42
    (bar,) = bars(sparkline(values, 96, 21))
    assert bar["height"] == 20 and bar["y"] == 0  # the top of the room above the base line
    assert bar["x"] == 92 and bar["width"] == 3  # slot 23 of 24 in 96 px, a 1 px gap
    assert title(sparkline(values, 96, 21)) == "total 0.42"


def test_bars_scale_to_the_largest_and_a_tiny_one_still_shows() -> None:
    got = bars(sparkline([10.0, 5.0, 0.0001], 30, 11))
    assert [b["height"] for b in got] == [10, 5, 1]
    assert all(b["y"] + b["height"] == 10 for b in got)  # all stand on the base line


def test_huge_values_are_clamped_and_the_total_stays_finite() -> None:
    svg = sparkline([1e308, 1e308, 3.0], 60, 20)
    heights = [b["height"] for b in bars(svg)]
    assert heights[0] == heights[1] == 19 and heights[2] == 1
    assert "e+" not in svg and "inf" not in svg.lower()
    assert title(svg) == f"total {2 * MAX_VALUE + 3:,.2f}"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, -5.0])
def test_nan_inf_and_negative_count_as_nothing(bad: float) -> None:
    svg = sparkline([bad, 2.0], 20, 10)
    (bar,) = bars(svg)
    assert bar["x"] == 10  # only the second slot has a bar
    assert title(svg) == "total 2.00" and "nan" not in svg.lower()
    assert clean([bad]) == [0.0]


@pytest.mark.parametrize("bad", ["1", None, True, [1.0]])
def test_what_is_no_number_is_refused(bad: Any) -> None:
    with pytest.raises(TypeError):
        sparkline([1.0, bad], 20, 10)


@pytest.mark.parametrize(("width", "height"), [(0, 10), (10, 0), (5000, 10), (10.5, 10), (True, 10), (-1, 3)])
def test_a_size_out_of_range_is_refused(width: Any, height: Any) -> None:
    with pytest.raises(ValueError, match="pixels"):
        sparkline([1.0], width, height)


def test_too_many_values_are_refused() -> None:
    assert parse(sparkline([1.0] * MAX_BUCKETS, 100, 10)) is not None  # narrow slots, no gap
    with pytest.raises(ValueError, match="at most"):
        sparkline([1.0] * (MAX_BUCKETS + 1), 100, 10)


def test_the_title_is_escaped() -> None:
    evil = '</title><script>alert(1)</script><title a="'
    svg = sparkline([1.0], 20, 10, title=evil)
    assert "<script>" not in svg
    assert title(svg) == evil and parse(svg).get("aria-label") == evil


# --- the texts ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("usd", "text"), [
    (0, "$0.00"), (0.0, "$0.00"), (-1.0, "$0.00"), (0.0003, "<$0.01"), (0.005, "$0.01"), (0.42, "$0.42"),
    (12.345, "$12.35"), (999.99, "$999.99"), (1234.5, "$1,234"), (math.nan, "$?"), (math.inf, "$?"),
    (None, "$?"), ("1", "$?"), (True, "$?"),
])
def test_usd_text(usd: Any, text: str) -> None:
    assert usd_text(usd) == text


def test_budget_text() -> None:
    assert budget_text(None) is None
    assert budget_text({"usd": 5, "per": "day", "spent_usd": 4.1}) == "$4.10/$5.00 per day"
    assert budget_text({"usd": 20, "per": "week", "spent_usd": 0}) == "$0.00/$20.00 per week"
    assert budget_text({"usd": 1, "per": "total", "spent_usd": 1.5}) == "$1.50/$1.00 in all"


def test_spark_since_ends_with_the_current_hour() -> None:
    now = 1_000_000_000.0 + 1234.5  # 20:34:54 UTC, 2001-09-09 02:01:40 + 1234.5 s
    since = spark_since(now)
    assert since % 3600 == 0 and since <= now < since + BUCKETS * 3600
    assert since + (BUCKETS - 1) * 3600 <= now  # the last bucket is the hour now is in
    assert spark_since(since) == since - (BUCKETS - 1) * 3600


def test_fleet_series_adds_every_agent_up() -> None:
    got = fleet_series({"a": [1.0, 0.0, 2.0], "b": [0.5, math.nan, 1.0], "gone": [0.0, 3.0]}, buckets=3)
    assert got == [1.5, 3.0, 3.0]
    assert fleet_series({}) == [0.0] * BUCKETS


def test_reported_agents() -> None:
    summary = {"a": {"reported_calls": 2, "unpriced_calls": 0}, "b": {"reported_calls": 0, "unpriced_calls": 1},
               "c": {"reported_calls": 0, "unpriced_calls": 0}}
    assert reported_agents(summary) == {"a", "b"}


def test_cost_cell_with_a_budget_and_a_short_series() -> None:
    view = {"today_usd": 4.2, "standing": "warn", "over_budget": False,
            "budget": {"usd": 5.0, "per": "day", "spent_usd": 4.2}}
    cell = cost_cell(view, [0.0, 1.2], who="alice")
    assert cell["today"] == "$4.20" and cell["standing"] == "warn" and not cell["over_budget"]
    assert cell["budget_text"] == "$4.20/$5.00 per day" and cell["last_24h"] == "$1.20"
    assert title(cell["spark"]) == "alice: $1.20 in the last 24 h"
    (bar,) = bars(cell["spark"])
    assert bar["x"] == 4  # the series is padded to 24 slots: slot 1 of 24 in 96 px


def test_cost_cell_with_no_budget_and_no_series() -> None:
    cell = cost_cell({"today_usd": 0.0, "standing": "ok", "over_budget": True}, None, reported=True)
    assert cell["today"] == "$0.00" and cell["budget"] is None and cell["budget_text"] is None
    assert cell["over_budget"] and cell["reported"] and bars(cell["spark"]) == []
