"""What a model call costs (issue 15), pure: a declared price table per model
and the cost of one call's tokens.

Prices are US dollars per million tokens, for the four kinds of tokens the
Messages API reports: ``input`` (``input_tokens``), ``output``,
``cache_read`` (``cache_read_input_tokens``) and ``cache_write``
(``cache_creation_input_tokens``, the 5-minute cache). A model id finds its
row by exact name, else by the longest row name it starts with at a ``-``
boundary (``claude-sonnet-4-5-20250929`` → ``claude-sonnet-4-5``). A model no
row names is not priced here: its cost is the one the CLI reports.

What else the API bills by the usage it answers: the part of the cache writes
made for an hour (``cache_creation.ephemeral_1h_input_tokens``, kept by
`sse_usage` as ``cache_creation_1h_input_tokens``) at ``cache_write_1h`` (2×
input unless given); server-side web searches
(``server_tool_use.web_search_requests``) at ``WEB_SEARCH_USD`` each; and, on
a row with ``long_context`` (Sonnet 4 with the 1M context), a prompt over that
many input tokens (cache reads and writes included) at the long-context
rates: the input side 2×, the output 1.5×.

The defaults are Anthropic's list prices for the Claude models; the operator
overrides or adds rows with ``--prices FILE`` (a JSON object ``{model:
{"input": …, "output": …, "cache_read": …, "cache_write": …, "cache_write_1h": …,
"long_context_above": …}}``, missing kinds derived from ``input`` as Anthropic
does: cache reads at 0.1×, cache writes at 1.25×, hour-long ones at 2×).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hyperhive.errors import BadSetting

__all__ = ["CACHE_1H_KEY", "DEFAULT_PRICES", "KINDS", "SEARCHES_KEY", "USAGE_KEYS", "WEB_SEARCH_USD", "Price",
           "cost_usd", "load_prices", "parse_prices", "price_for"]

KINDS = ("input", "output", "cache_read", "cache_write")
# The Messages API's usage field for each kind.
USAGE_KEYS = {"input": "input_tokens", "output": "output_tokens", "cache_read": "cache_read_input_tokens",
              "cache_write": "cache_creation_input_tokens"}
MAX_PRICE = 10_000.0  # USD per million tokens: anything above is a typo
MAX_ROWS = 1000
MAX_TOKENS = 2**63 - 1  # what one call's count of a kind is taken as at most (sqlite's INTEGER)
CACHE_1H_KEY = "cache_creation_1h_input_tokens"  # of the cache writes, those made for an hour (sse_usage)
SEARCHES_KEY = "web_search_requests"  # server-side web searches (sse_usage)
WEB_SEARCH_USD = 0.01  # $10 per 1000 searches
LONG_INPUT, LONG_OUTPUT = 2.0, 1.5  # the long-context rates, times the row's


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens of each kind."""

    input: float
    output: float
    cache_read: float
    cache_write: float  # the 5-minute cache
    cache_write_1h: float | None = None  # the hour-long cache (None: 2 x input)
    long_context: int = 0  # input tokens over which the long-context rates apply (0: none)

    @classmethod
    def of(cls, input: float, output: float) -> Price:  # noqa: A002 - the kind's name
        return cls(input, output, round(input * 0.1, 6), round(input * 1.25, 6))

    @property
    def write_1h(self) -> float:
        return self.input * 2 if self.cache_write_1h is None else self.cache_write_1h

    def to_wire(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in KINDS}


DEFAULT_PRICES: Mapping[str, Price] = {
    "claude-opus-4-5": Price.of(5.0, 25.0),
    "claude-opus-4": Price.of(15.0, 75.0),  # 4 and 4.1
    "claude-sonnet-4": replace(Price.of(3.0, 15.0), long_context=200_000),  # 4 and 4.5; past 200k: 2x, 1.5x
    "claude-haiku-4-5": Price.of(1.0, 5.0),
    "claude-3-7-sonnet": Price.of(3.0, 15.0),
    "claude-3-5-sonnet": Price.of(3.0, 15.0),
    "claude-3-5-haiku": Price.of(0.8, 4.0),
    "claude-3-opus": Price.of(15.0, 75.0),
    "claude-3-haiku": Price(0.25, 1.25, 0.03, 0.3),
}


def price_for(model: str | None, table: Mapping[str, Price]) -> Price | None:
    """The row for ``model``: its own, else the longest name it starts with at a ``-`` boundary."""
    if not model or not isinstance(model, str):
        return None
    if model in table:
        return table[model]
    best: str | None = None
    for name in table:
        if model.startswith(name + "-") and (best is None or len(name) > len(best)):
            best = name
    return None if best is None else table[best]


def _count(n: Any) -> int:
    # A count is a response body's integer: one past a float's range would raise OverflowError.
    return min(n, MAX_TOKENS) if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 0


def cost_usd(usage: Mapping[str, Any], price: Price) -> float:
    """The cost of one call (``usage`` has the Messages API's keys, and `sse_usage`'s
    CACHE_1H_KEY and SEARCHES_KEY)."""
    n = {kind: _count(usage.get(USAGE_KEYS[kind])) for kind in KINDS}
    input_side = n["input"] * price.input + n["cache_read"] * price.cache_read + n["cache_write"] * price.cache_write
    input_side += min(_count(usage.get(CACHE_1H_KEY)), n["cache_write"]) * (price.write_1h - price.cache_write)
    output = n["output"] * price.output
    if price.long_context and n["input"] + n["cache_read"] + n["cache_write"] > price.long_context:
        input_side, output = input_side * LONG_INPUT, output * LONG_OUTPUT
    return (input_side + output) / 1_000_000 + _count(usage.get(SEARCHES_KEY)) * WEB_SEARCH_USD


def _number(value: Any, where: str) -> float:
    # The range first: math.isfinite raises OverflowError on an int past a float's range.
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_PRICE \
            or not math.isfinite(value):
        raise BadSetting(f"{where} must be a number of dollars per million tokens in 0..{MAX_PRICE:g}, "
                         f"got {value!r}")
    return float(value)


def parse_prices(doc: Any, where: str = "prices") -> dict[str, Price]:
    """Rows from a JSON document (see the module's doc); BadSetting on anything else."""
    if not isinstance(doc, dict) or len(doc) > MAX_ROWS:
        raise BadSetting(f"{where} must be a JSON object of at most {MAX_ROWS} models")
    out: dict[str, Price] = {}
    for model, row in doc.items():
        if not (isinstance(model, str) and 0 < len(model) <= 128 and model.isascii() and model.isprintable()
                and " " not in model):
            raise BadSetting(f"{where}: {model!r} is not a model name")
        if not isinstance(row, dict):
            raise BadSetting(f"{where}: {model} must be an object like {{\"input\": 3, \"output\": 15}}")
        unknown = set(row) - {*KINDS, "cache_write_1h", "long_context_above"}
        if unknown:
            raise BadSetting(f"{where}: {model} has unknown key(s): {', '.join(sorted(map(str, unknown)))}")
        if "input" not in row or "output" not in row:
            raise BadSetting(f"{where}: {model} needs at least input and output")
        base = Price.of(_number(row["input"], f"{where}: {model}.input"),
                        _number(row["output"], f"{where}: {model}.output"))
        long = row.get("long_context_above", 0)
        if isinstance(long, bool) or not isinstance(long, int) or not 0 <= long <= MAX_TOKENS:
            raise BadSetting(f"{where}: {model}.long_context_above must be a whole number of tokens, got {long!r}")
        out[model] = Price(base.input, base.output,
                           _number(row.get("cache_read", base.cache_read), f"{where}: {model}.cache_read"),
                           _number(row.get("cache_write", base.cache_write), f"{where}: {model}.cache_write"),
                           None if "cache_write_1h" not in row else
                           _number(row["cache_write_1h"], f"{where}: {model}.cache_write_1h"), long)
    return out


def load_prices(path: str) -> dict[str, Price]:
    """The price table: the defaults, with the rows of the JSON file at ``path`` (if any) over them."""
    table = dict(DEFAULT_PRICES)
    if not path:
        return table
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # an editor's byte-order mark is no error
    except (OSError, UnicodeDecodeError) as exc:
        raise BadSetting(f"prices: cannot read {path}: {exc}") from None
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than the parser goes
        raise BadSetting(f"prices: {path} is not JSON: {exc or 'nested too deep'}") from None
    table.update(parse_prices(doc, f"prices ({path})"))
    return table
