"""Where an agent may run on a Ray cluster (issue 18): what it asks of a node.

One `Placement` from either source:

- ``hive spawn NAME --cpus N --memory-mb N --resources key=value[,…]``
  (`parse_placement_flags`, the flags' strings as typed);
- agent.json's ``"placement": {"cpus": …, "memory_mb": …, "resources": {…}}``
  (`parse_placement_json`, the parsed JSON value).

`Placement.ray_options` is what the agent's Ray actor is created with
(``num_cpus``, ``memory`` in bytes, ``num_gpus``, ``resources``), and
`check_placement` refuses, before anything is created, a placement that names
a resource no live node offers or that no single node could ever hold (its
totals, as ``ray.nodes()`` reports them). Everything here is pure: no Ray.

Quantities follow Ray's rules: a fraction only up to 1 (0.5 of a GPU), whole
numbers above, at most 4 decimals. Resource names are short identifiers; Ray's
own (CPU, memory, object_store_memory, node:…) are refused there: ``--cpus``
and ``--memory-mb`` say those. ``GPU`` may be given as a resource (``num_gpus``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hyperhive.errors import BadRequest

__all__ = ["MAX_CPUS", "MAX_MEMORY_MB", "MAX_QUANTITY", "Placement", "check_placement", "parse_placement_flags",
           "parse_placement_json", "parse_resources"]

MAX_CPUS = 4096.0
MAX_MEMORY_MB = 1 << 24  # 16 TiB
MAX_QUANTITY = 1_000_000.0
MAX_RESOURCES = 16
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,62}")
_RAY_OWN = frozenset({"CPU", "memory", "object_store_memory"})  # said by --cpus / --memory-mb, or Ray's alone
_JSON_KEYS = frozenset({"cpus", "memory_mb", "resources"})
_MB = 1024 * 1024


@dataclass(frozen=True)
class Placement:
    cpus: float | None = None  # None: nothing asked (the actor takes no CPU of the node's)
    memory_mb: int | None = None
    resources: tuple[tuple[str, float], ...] = ()  # sorted by name

    @property
    def empty(self) -> bool:
        return self.cpus is None and self.memory_mb is None and not self.resources

    def ray_options(self) -> dict[str, Any]:
        """The Ray actor options this asks for (always ``num_cpus``: Ray's default for an actor is 1)."""
        custom = dict(self.resources)
        out: dict[str, Any] = {"num_cpus": self.cpus or 0}
        if "GPU" in custom:
            out["num_gpus"] = custom.pop("GPU")
        if self.memory_mb is not None:
            out["memory"] = self.memory_mb * _MB
        if custom:
            out["resources"] = custom
        return out

    def needs(self) -> dict[str, float]:
        """What a node must offer, in ``ray.nodes()``'s terms (memory in bytes)."""
        out = dict(self.resources)
        if self.cpus:
            out["CPU"] = self.cpus
        if self.memory_mb is not None:
            out["memory"] = float(self.memory_mb * _MB)
        return out

    def to_json(self) -> dict[str, Any]:
        """agent.json's ``placement`` (what `parse_placement_json` reads back)."""
        out: dict[str, Any] = {}
        if self.cpus is not None:
            out["cpus"] = int(self.cpus) if self.cpus.is_integer() else self.cpus
        if self.memory_mb is not None:
            out["memory_mb"] = self.memory_mb
        if self.resources:
            out["resources"] = {k: int(v) if v.is_integer() else v for k, v in self.resources}
        return out

    def describe(self) -> str:
        """``cpus=2 memory_mb=512 pool=1``: for errors and logs."""
        parts = [f"{k}={v}" for k, v in self.to_json().items() if k != "resources"]
        return " ".join(parts + [f"{k}={_fmt(v)}" for k, v in self.resources]) or "nothing"


def _fmt(value: float) -> str:
    return str(int(value)) if value.is_integer() else str(value)


def _quantity(value: Any, what: str, upper: float) -> float:
    """A Ray quantity: a finite number > 0, a fraction only up to 1, at most 4 decimals."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{what} must be a number, got {value!r}")
    q = float(value)
    if not math.isfinite(q) or q <= 0:
        raise BadRequest(f"{what} must be a number above 0, got {value!r}")
    if q > upper:
        raise BadRequest(f"{what} must be at most {_fmt(upper)}, got {value!r}")
    if q > 1 and not q.is_integer():
        raise BadRequest(f"{what} above 1 must be a whole number (Ray's rule), got {value!r}")
    if abs(round(q, 4) - q) > 1e-12:
        raise BadRequest(f"{what} has more than 4 decimals: {value!r}")
    return q


def _number_text(text: str, what: str) -> float:
    """A number as typed on a command line (``2``, ``0.5``); never nan, inf or 1e400."""
    t = text.strip()
    if not re.fullmatch(r"[0-9]{1,12}(\.[0-9]{1,12})?|\.[0-9]{1,12}", t):
        raise BadRequest(f"{what} must be a number like 2 or 0.5, got {text!r}")
    return float(t)


def _name(key: Any, what: str) -> str:
    if not isinstance(key, str) or not key:
        raise BadRequest(f"{what}: a resource needs a name, got {key!r}")
    if not _NAME.fullmatch(key):
        raise BadRequest(f"{what}: resource name {key!r} must be a letter or _ then letters, digits, _ . - "
                         f"(at most 63)")
    if key in _RAY_OWN:
        raise BadRequest(f"{what}: {key} is not a resource to name here (use --cpus / --memory-mb)")
    return key


def _memory(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_MEMORY_MB:
        raise BadRequest(f"{what} must be a whole number of MB in 1..{MAX_MEMORY_MB}, got {value!r}")
    return value


def _resources(pairs: Sequence[tuple[Any, Any]], what: str) -> tuple[tuple[str, float], ...]:
    if len(pairs) > MAX_RESOURCES:
        raise BadRequest(f"{what}: at most {MAX_RESOURCES} resources, got {len(pairs)}")
    out: dict[str, float] = {}
    for key, value in pairs:
        name = _name(key, what)
        if name in out:
            raise BadRequest(f"{what}: resource {name} given twice")
        out[name] = _quantity(value, f"{what}: resource {name}", MAX_QUANTITY)
    return tuple(sorted(out.items()))


def parse_resources(text: str, what: str = "--resources") -> tuple[tuple[str, float], ...]:
    """``key=value[,key=value…]`` → sorted (name, quantity) pairs."""
    if not text.strip():
        raise BadRequest(f"{what} is empty: give key=value[,key=value…]")
    pairs: list[tuple[str, float]] = []
    for item in text.split(","):
        key, eq, value = item.partition("=")
        if not eq:
            raise BadRequest(f"{what}: {item.strip()!r} is not key=value")
        key = key.strip()
        _name(key, what)
        pairs.append((key, _number_text(value, f"{what}: resource {key}")))
    return _resources(pairs, what)


def parse_placement_flags(cpus: str | None = None, memory_mb: str | None = None,
                          resources: str | None = None) -> Placement:
    """The spawn flags as typed (None: not given)."""
    c = None if cpus is None else _quantity(_number_text(cpus, "--cpus"), "--cpus", MAX_CPUS)
    m = None
    if memory_mb is not None:
        if not re.fullmatch(r"[0-9]{1,9}", memory_mb.strip()):
            raise BadRequest(f"--memory-mb must be a whole number of MB, got {memory_mb!r}")
        m = _memory(int(memory_mb.strip()), "--memory-mb")
    return Placement(c, m, () if resources is None else parse_resources(resources))


def parse_placement_json(raw: Any, where: str = "agent config") -> Placement:
    """agent.json's ``placement`` value; unknown keys are refused."""
    what = f"{where}: placement"
    if not isinstance(raw, dict):
        raise BadRequest(f'{what} must be an object like {{"cpus": 1, "memory_mb": 512, "resources": {{"pool": 1}}}}')
    unknown = set(raw) - _JSON_KEYS
    if unknown:
        raise BadRequest(f"{what} has unknown key(s): {', '.join(sorted(map(str, unknown)))}")
    cpus = raw.get("cpus")
    c = None if cpus is None else _quantity(cpus, f"{what}.cpus", MAX_CPUS)
    mem = raw.get("memory_mb")
    m = None if mem is None else _memory(mem, f"{what}.memory_mb")
    res = raw.get("resources", {})
    if not isinstance(res, dict):
        raise BadRequest(f'{what}.resources must be an object like {{"pool": 1}}')
    return Placement(c, m, _resources(list(res.items()), f"{what}.resources"))


def check_placement(placement: Placement, nodes: Sequence[Mapping[str, Any]]) -> None:
    """Refuse (BadRequest) a placement the cluster can never hold: a resource no live
    node offers, or a request no single live node's totals reach. ``nodes``: as
    ``ray.nodes()`` gives them (``Alive``, ``Resources``: the node's totals)."""
    alive = [n.get("Resources") or {} for n in nodes if n.get("Alive")]
    if not alive:
        raise BadRequest("the Ray cluster has no live node")
    offered = {k for totals in alive for k in totals}
    needs = placement.needs()
    for key in sorted(needs):
        if key not in offered:
            custom = sorted(k for k in offered if _NAME.fullmatch(k) and k not in _RAY_OWN and k != "GPU")
            raise BadRequest(f"unknown resource {key}: no node of the Ray cluster offers it "
                             f"(custom resources there: {', '.join(custom) or 'none'})")
    if any(all(float(totals.get(k, 0)) >= v for k, v in needs.items()) for totals in alive):
        return
    best = max(alive, key=lambda t: sum(min(float(t.get(k, 0)) / v, 1.0) for k, v in needs.items()))
    has = " ".join(_offer(k, float(best.get(k, 0))) for k in sorted(needs))
    raise BadRequest(f"no node of the Ray cluster can ever hold {placement.describe()} (the closest offers {has})")


def _offer(key: str, total: float) -> str:
    if key == "memory":
        return f"memory_mb={total // _MB:.0f}"
    return f"cpus={_fmt(total)}" if key == "CPU" else f"{key}={_fmt(total)}"
