"""Short texts for people, shared by the dashboard and the CLI (pure)."""

from __future__ import annotations

__all__ = ["span_text"]

_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def span_text(seconds: float, *, largest: str = "d", fine: bool = True) -> str:
    """A span in its largest one or two units: ``42s``, ``3m 5s``, ``1h 2m``,
    ``1d 1h``. Units above ``largest`` are not used (``largest="h"``: ``26h 0m``);
    without ``fine`` seconds never follow minutes (``3m``)."""
    s = max(0, int(seconds))
    units = _UNITS[[name for name, _ in _UNITS].index(largest):]
    for i, (name, size) in enumerate(units):
        if s >= size or size == 1:
            text = f"{s // size}{name}"
            if i + 1 < len(units):
                nxt_name, nxt_size = units[i + 1]
                if fine or nxt_name != "s":
                    text += f" {s % size // nxt_size}{nxt_name}"
            return text
    raise AssertionError("unreachable: the last unit is one second")
