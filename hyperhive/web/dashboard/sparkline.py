"""A sparkline as inline SVG (issue 15), pure: numbers in, markup out, no
build step and no JS library on the page.

The markup is built from numbers this module formats and one escaped title,
so the page may insert it as HTML. A value that is not a finite number
(NaN, an infinity) or is negative counts as 0; one past ``MAX_VALUE`` is
clamped, so the total stays finite. Only the non-zero buckets get a bar
(``rect.bar``, at least 1 px high so a cent among dollars still shows); a
flat line (``rect.base``) marks the bottom.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

__all__ = ["MAX_BUCKETS", "MAX_SIDE", "MAX_VALUE", "clean", "sparkline"]

MAX_VALUE = 1e15  # far past any bill: a clamp, so sums never overflow
MAX_BUCKETS = 1000
MAX_SIDE = 4096  # pixels, either side


def clean(values: Sequence[float]) -> list[float]:
    """Each value as a float in [0, MAX_VALUE]: non-finite and negative ones are 0.
    A value that is no number at all (a string, a bool, None) is refused."""
    out: list[float] = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise TypeError(f"a sparkline takes numbers, got {v!r}")
        f = float(v)
        out.append(0.0 if not math.isfinite(f) or f <= 0 else min(f, MAX_VALUE))
    return out


def _num(x: float) -> str:
    """A coordinate: at most two decimals, no exponent, no trailing zeros."""
    text = f"{x:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def sparkline(values: Sequence[float], width: int = 96, height: int = 20, *, title: str | None = None) -> str:
    """An ``<svg class="spark">`` of one bar per value (oldest first), scaled to
    the largest; ``title`` (escaped) defaults to the total (``total 1.23``)."""
    for side, n in (("width", width), ("height", height)):
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_SIDE:
            raise ValueError(f"a sparkline's {side} must be a whole number of pixels in 1..{MAX_SIDE}, got {n!r}")
    if len(values) > MAX_BUCKETS:
        raise ValueError(f"a sparkline takes at most {MAX_BUCKETS} values, got {len(values)}")
    vals = clean(values)
    total = math.fsum(vals)
    label = html.escape(title if title is not None else f"total {total:,.2f}", quote=True)
    top = max(vals, default=0.0)
    room = max(height - 1, 1)  # the bottom pixel row is the base line
    step = width / len(vals) if vals else float(width)
    gap = 1.0 if step >= 3 else 0.0
    bars = []
    for i, v in enumerate(vals):
        if v <= 0 or top <= 0:
            continue
        h = max(1.0, v / top * room)
        bars.append(f'<rect class="bar" x="{_num(i * step)}" y="{_num(room - h)}" '
                    f'width="{_num(max(step - gap, 0.5))}" height="{_num(h)}"/>')
    return (f'<svg class="spark" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" preserveAspectRatio="none" role="img" aria-label="{label}">'
            f"<title>{label}</title>"
            f'<rect class="base" x="0" y="{room}" width="{width}" height="1"/>'
            + "".join(bars) + "</svg>")
