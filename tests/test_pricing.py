"""hyperhive.pricing (issue 15): which row prices a model, what a call's tokens
cost, and every way a ``--prices`` file can be wrong (each a BadSetting that
names the problem, never a traceback at start)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hyperhive.errors import BadSetting
from hyperhive.pricing import DEFAULT_PRICES, Price, cost_usd, load_prices, parse_prices, price_for

TABLE = {
    "claude-opus-4": Price(15.0, 75.0, 1.5, 18.75),
    "claude-opus-4-5": Price(5.0, 25.0, 0.5, 6.25),
    "claude-sonnet-4": Price(3.0, 15.0, 0.3, 3.75),
    "m": Price(1.0, 2.0, 0.5, 4.0),
}


# --- price_for -------------------------------------------------------------------------------
@pytest.mark.parametrize(("model", "row"), [
    ("claude-opus-4", "claude-opus-4"),  # exact
    ("claude-opus-4-5", "claude-opus-4-5"),  # exact, though a shorter row is a prefix of it
    ("claude-opus-4-5-20251101", "claude-opus-4-5"),  # the longest prefix wins ...
    ("claude-opus-4-1-20250805", "claude-opus-4"),  # ... and a shorter one takes what it leaves
    ("claude-opus-4-20250514", "claude-opus-4"),
    ("claude-sonnet-4-5-20250929", "claude-sonnet-4"),
    ("m-1", "m"),
])
def test_a_model_finds_its_row_exactly_or_by_the_longest_prefix_at_a_dash(model: str, row: str) -> None:
    assert price_for(model, TABLE) is TABLE[row]


@pytest.mark.parametrize("model", [
    "claude-opus-45",  # a prefix, but not at a '-' boundary
    "claude-opus-4x-1",
    "claude-opus",  # shorter than every row
    "claude-opus-",  # a dash, but no row is "claude-opus"
    "mm",
    "gpt-4o",
    "CLAUDE-OPUS-4",  # names are case-sensitive
    "",
    None,
    42,  # not a string at all (a body's "model" of another type)
    ["claude-opus-4"],
])
def test_a_model_no_row_names_is_not_priced(model: str | None) -> None:
    assert price_for(model, TABLE) is None


def test_the_defaults_price_the_current_claude_models_at_their_list_prices() -> None:
    def row(model: str) -> tuple[float, float, float, float]:
        p = price_for(model, DEFAULT_PRICES)
        assert p is not None, model
        return (p.input, p.output, p.cache_read, p.cache_write)

    assert row("claude-opus-4-5-20251101") == (5.0, 25.0, 0.5, 6.25)
    assert row("claude-opus-4-1-20250805") == (15.0, 75.0, 1.5, 18.75)
    assert row("claude-sonnet-4-5-20250929") == (3.0, 15.0, 0.3, 3.75)
    assert row("claude-haiku-4-5-20251001") == (1.0, 5.0, 0.1, 1.25)
    assert row("claude-3-5-haiku-20241022") == (0.8, 4.0, 0.08, 1.0)
    assert row("claude-3-haiku-20240307") == (0.25, 1.25, 0.03, 0.3)


# --- cost_usd ----------------------------------------------------------------------------------
P = Price(input=3.0, output=15.0, cache_read=0.3, cache_write=3.75)


@pytest.mark.parametrize(("usage", "usd"), [
    ({"input_tokens": 1_000_000}, 3.0),
    ({"output_tokens": 1_000_000}, 15.0),
    ({"cache_read_input_tokens": 1_000_000}, 0.3),
    ({"cache_creation_input_tokens": 1_000_000}, 3.75),
    ({"input_tokens": 1000, "output_tokens": 500, "cache_read_input_tokens": 20_000,
      "cache_creation_input_tokens": 4000}, (1000 * 3 + 500 * 15 + 20_000 * 0.3 + 4000 * 3.75) / 1e6),
    ({}, 0.0),
    ({"input_tokens": 0, "output_tokens": None}, 0.0),
    # what is not a count of tokens counts nothing
    ({"input_tokens": -5, "output_tokens": True, "cache_read_input_tokens": 1.5,
      "cache_creation_input_tokens": "7"}, 0.0),
    ({"model": "x", "status": 200, "input_tokens": 2}, 6e-6),
])
def test_a_calls_cost_is_each_kind_at_its_price(usage: dict[str, Any], usd: float) -> None:
    assert cost_usd(usage, P) == pytest.approx(usd, rel=1e-12, abs=0)


def test_an_absurd_token_count_never_raises() -> None:
    """The counts come from a response body: a number too big for a float is not an OverflowError."""
    cost = cost_usd({"input_tokens": 10**400, "output_tokens": 1000}, P)
    assert cost >= 0.015 and cost == cost and cost != float("inf")


# --- parse_prices / load_prices ------------------------------------------------------------------
def test_a_row_with_only_input_and_output_derives_the_cache_prices() -> None:
    rows = parse_prices({"x-1": {"input": 2, "output": 10}, "y": {"input": 4, "output": 8, "cache_read": 1,
                                                                   "cache_write": 0}})
    assert rows["x-1"] == Price(2.0, 10.0, 0.2, 2.5)
    assert rows["y"] == Price(4.0, 8.0, 1.0, 0.0)
    assert parse_prices({}) == {}


@pytest.mark.parametrize(("doc", "says"), [
    ([], "must be a JSON object"),
    ("claude", "must be a JSON object"),
    (None, "must be a JSON object"),
    (3, "must be a JSON object"),
    ({f"m{i}": {"input": 1, "output": 1} for i in range(1001)}, "at most 1000"),
    ({"m": 3}, "must be an object like"),
    ({"m": [3, 15]}, "must be an object like"),
    ({"m": {"input": 1, "output": 2, "cache": 3}}, "unknown key(s): cache"),
    ({"m": {"input": 1, "output": 2, "Input": 3, "x": 1}}, "unknown key(s): Input, x"),
    ({"m": {"input": 1}}, "needs at least input and output"),
    ({"m": {"output": 1}}, "needs at least input and output"),
    ({"m": {"input": -1, "output": 2}}, "m.input must be a number"),
    ({"m": {"input": 1, "output": -0.5}}, "m.output must be a number"),
    ({"m": {"input": 1, "output": 2, "cache_read": -1}}, "m.cache_read must be a number"),
    ({"m": {"input": 1, "output": 2, "cache_write": "3"}}, "m.cache_write must be a number"),
    ({"m": {"input": True, "output": 2}}, "m.input must be a number"),
    ({"m": {"input": None, "output": 2}}, "m.input must be a number"),
    ({"m": {"input": 10_001, "output": 2}}, "m.input must be a number"),
    ({"m": {"input": 10**400, "output": 2}}, "m.input must be a number"),
    ({"m": {"input": float("inf"), "output": 2}}, "m.input must be a number"),
    ({"m": {"input": float("nan"), "output": 2}}, "m.input must be a number"),
    ({"": {"input": 1, "output": 2}}, "is not a model name"),
    ({"claude opus": {"input": 1, "output": 2}}, "is not a model name"),
    ({"claude\tx": {"input": 1, "output": 2}}, "is not a model name"),
    ({"claude\nx": {"input": 1, "output": 2}}, "is not a model name"),
    ({"claude\x00": {"input": 1, "output": 2}}, "is not a model name"),
    ({"claude\ud800": {"input": 1, "output": 2}}, "is not a model name"),  # a lone surrogate
    ({"clàude": {"input": 1, "output": 2}}, "is not a model name"),
    ({"m" * 129: {"input": 1, "output": 2}}, "is not a model name"),
])
def test_a_bad_table_is_a_bad_setting_that_says_why(doc: Any, says: str) -> None:
    with pytest.raises(BadSetting) as info:
        parse_prices(doc)
    assert says in str(info.value)
    assert str(info.value).startswith("prices")


def test_a_price_at_the_bounds_is_taken() -> None:
    rows = parse_prices({"m" * 128: {"input": 0, "output": 10_000}})
    assert rows["m" * 128] == Price(0.0, 10_000.0, 0.0, 0.0)


def write(tmp_path: Path, data: bytes | str) -> str:
    path = tmp_path / "prices.json"
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return str(path)


def test_no_file_is_the_defaults() -> None:
    assert load_prices("") == dict(DEFAULT_PRICES)


def test_a_file_overrides_and_adds_rows_over_the_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, json.dumps({"claude-opus-4-5": {"input": 1, "output": 2},
                                       "claude-opus-4-5-20251101": {"input": 7, "output": 8},
                                       "local-llama": {"input": 0, "output": 0}}))
    table = load_prices(path)
    assert table["claude-opus-4-5"] == Price(1.0, 2.0, 0.1, 1.25)
    assert table["local-llama"] == Price(0.0, 0.0, 0.0, 0.0)
    assert table["claude-sonnet-4"] == DEFAULT_PRICES["claude-sonnet-4"]  # the rest stay
    assert price_for("claude-opus-4-5-20251101", table) == Price(7.0, 8.0, 0.7, 8.75)
    assert price_for("claude-opus-4-5-20990101", table) == Price(1.0, 2.0, 0.1, 1.25)
    assert price_for("local-llama-3", table) == Price(0.0, 0.0, 0.0, 0.0)
    assert set(DEFAULT_PRICES) < set(table)
    assert DEFAULT_PRICES["claude-opus-4-5"] == Price(5.0, 25.0, 0.5, 6.25)  # the defaults are not touched


@pytest.mark.parametrize(("content", "says"), [
    (b'{"m": {"input": NaN, "output": 1}}', "m.input must be a number"),  # Python's json takes NaN
    (b'{"m": {"input": 1, "output": Infinity}}', "m.output must be a number"),
    (b'{"m": {"input": -Infinity, "output": 1}}', "m.input must be a number"),
    (b'{"m": {"input": 1e400, "output": 1}}', "m.input must be a number"),  # json: inf
    (b'{"m": {"input": 1' + b"0" * 400 + b', "output": 1}}', "m.input must be a number"),  # a huge int
    (b'{"m": {"input": 1' + b"0" * 5000 + b', "output": 1}}', "is not JSON"),  # past int's digit limit
    (b'{"m": {"input": 1, "output": 2}', "is not JSON"),
    (b"", "is not JSON"),
    (b"prices", "is not JSON"),
    (b"[" * 100_000, "is not JSON"),  # nesting deeper than the parser's recursion
    (b'{"m": {"input": 1, "output": 2}}\n{}', "is not JSON"),
    (b'{"m\\ud800": {"input": 1, "output": 2}}', "is not a model name"),  # an escaped lone surrogate
    (b'\xff\xfe{"m": {}}', "cannot read"),  # not UTF-8
    (b'{"caf\xe9": {"input": 1, "output": 2}}', "cannot read"),
    (b"[]", "must be a JSON object"),
    (b"null", "must be a JSON object"),
])
def test_a_bad_prices_file_is_a_bad_setting_naming_the_file(tmp_path: Path, content: bytes, says: str) -> None:
    path = write(tmp_path, content)
    with pytest.raises(BadSetting) as info:
        load_prices(path)
    assert says in str(info.value)
    assert path in str(info.value)


def test_a_missing_or_unreadable_prices_file_is_a_bad_setting(tmp_path: Path) -> None:
    for path in (tmp_path / "absent.json", tmp_path):  # missing; a directory
        with pytest.raises(BadSetting) as info:
            load_prices(str(path))
        assert "cannot read" in str(info.value) and str(path) in str(info.value)


def test_a_utf8_bom_file_is_read(tmp_path: Path) -> None:
    """An editor's byte-order mark is not a reason to refuse the file."""
    path = write(tmp_path, b"\xef\xbb\xbf" + json.dumps({"m": {"input": 1, "output": 2}}).encode())
    assert load_prices(path)["m"] == Price(1.0, 2.0, 0.1, 1.25)
