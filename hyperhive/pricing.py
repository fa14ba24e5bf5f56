"""What a model call costs (issue 15), pure: a declared price table per model
and the cost of one call's tokens.

Prices are US dollars per million tokens, for the four kinds of tokens the
Messages API reports: ``input`` (``input_tokens``), ``output``,
``cache_read`` (``cache_read_input_tokens``) and ``cache_write``
(``cache_creation_input_tokens``, the 5-minute cache). A model id finds its
row by exact name, else by the longest row name it starts with at a ``-``
boundary (``claude-sonnet-4-5-20250929`` → ``claude-sonnet-4-5``). A model no
row names is not priced here: its cost is the one the CLI reports.

The defaults are Anthropic's list prices for the Claude models; the operator
overrides or adds rows with ``--prices FILE`` (a JSON object ``{model:
{"input": …, "output": …, "cache_read": …, "cache_write": …}}``, missing
kinds derived from ``input`` as Anthropic does: cache reads at 0.1×, cache
writes at 1.25×).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyperhive.errors import BadSetting

__all__ = ["DEFAULT_PRICES", "KINDS", "USAGE_KEYS", "Price", "cost_usd", "load_prices", "parse_prices", "price_for"]

KINDS = ("input", "output", "cache_read", "cache_write")
# The Messages API's usage field for each kind.
USAGE_KEYS = {"input": "input_tokens", "output": "output_tokens", "cache_read": "cache_read_input_tokens",
              "cache_write": "cache_creation_input_tokens"}
MAX_PRICE = 10_000.0  # USD per million tokens: anything above is a typo
MAX_ROWS = 1000
MAX_TOKENS = 2**63 - 1  # what one call's count of a kind is taken as at most (sqlite's INTEGER)


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens of each kind."""

    input: float
    output: float
    cache_read: float
    cache_write: float

    @classmethod
    def of(cls, input: float, output: float) -> Price:  # noqa: A002 - the kind's name
        return cls(input, output, round(input * 0.1, 6), round(input * 1.25, 6))

    def to_wire(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in KINDS}


DEFAULT_PRICES: Mapping[str, Price] = {
    "claude-opus-4-5": Price.of(5.0, 25.0),
    "claude-opus-4": Price.of(15.0, 75.0),  # 4 and 4.1
    "claude-sonnet-4": Price.of(3.0, 15.0),  # 4 and 4.5 (prompts up to 200k tokens)
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


def cost_usd(usage: Mapping[str, Any], price: Price) -> float:
    """The cost of one call's tokens (``usage`` has the Messages API's keys)."""
    total = 0.0
    for kind in KINDS:
        n = usage.get(USAGE_KEYS[kind]) or 0
        if isinstance(n, int) and not isinstance(n, bool) and n > 0:
            # A count is a response body's integer: one past a float's range would raise OverflowError.
            total += min(n, MAX_TOKENS) * getattr(price, kind)
    return total / 1_000_000


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
        unknown = set(row) - set(KINDS)
        if unknown:
            raise BadSetting(f"{where}: {model} has unknown key(s): {', '.join(sorted(map(str, unknown)))}")
        if "input" not in row or "output" not in row:
            raise BadSetting(f"{where}: {model} needs at least input and output")
        base = Price.of(_number(row["input"], f"{where}: {model}.input"),
                        _number(row["output"], f"{where}: {model}.output"))
        out[model] = Price(base.input, base.output,
                           _number(row.get("cache_read", base.cache_read), f"{where}: {model}.cache_read"),
                           _number(row.get("cache_write", base.cache_write), f"{where}: {model}.cache_write"))
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
